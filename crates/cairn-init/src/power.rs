//! The ACPI power button: QEMU's `system_powerdown` (and a real button)
//! reaches the guest as a `KEY_POWER` press on the input device named
//! "Power Button" (kernel modules `button` and `evdev`).

#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16), type, code, value.
const EVENT_SIZE: usize = 24;

/// Finds `/dev/input/eventN` of the device called "Power Button".
pub fn find(sys_input: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(sys_input)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/name"))
                .is_ok_and(|n| n.trim() == "Power Button")
        })
        .map(|e| Path::new("/dev/input").join(e.file_name()))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Opens the power button, if there is one.
pub fn open() -> Option<(PathBuf, OwnedFd)> {
    let path = find(Path::new("/sys/class/input"))?;
    let fd = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    Some((path, fd))
}

/// Whether `events` (raw `input_event` records) hold a power key press.
pub fn has_power_press(events: &[u8]) -> bool {
    events.chunks_exact(EVENT_SIZE).any(|e| {
        let ty = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        ty == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Reads pending events; true if the power key was pressed.
pub fn read_pressed(fd: &OwnedFd) -> Result<bool, Errno> {
    let mut buf = [0u8; EVENT_SIZE * 16];
    let mut pressed = false;
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Err(Errno::NODEV),
            Ok(n) => pressed |= has_power_press(&buf[..n]),
            Err(Errno::AGAIN) => return Ok(pressed),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v
    }

    #[test]
    fn only_a_power_press_counts() {
        assert!(has_power_press(&ev(EV_KEY, KEY_POWER, 1)));
        assert!(!has_power_press(&ev(EV_KEY, KEY_POWER, 0)));
        assert!(!has_power_press(&ev(EV_KEY, 115, 1)));
        assert!(!has_power_press(&ev(0, 0, 0)));
        let mut two = ev(0, 0, 0);
        two.extend(ev(EV_KEY, KEY_POWER, 1));
        assert!(has_power_press(&two));
        assert!(!has_power_press(&[1, 2, 3]));
    }

    #[test]
    fn finds_the_device_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (n, name) in [("event0", "AT Keyboard"), ("event3", "Power Button")] {
            std::fs::create_dir_all(dir.path().join(n).join("device")).unwrap();
            std::fs::write(dir.path().join(n).join("device/name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(find(dir.path()), Some(PathBuf::from("/dev/input/event3")));
        assert_eq!(find(&dir.path().join("none")), None);
    }
}
