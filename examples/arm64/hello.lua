-- Run by the appliance's only service; its output goes to the console.
print(string.format("Hello from %s, taken from Debian's archive", _VERSION))
