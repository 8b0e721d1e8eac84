//! cairn-init entry point: a multi-call binary (`init` or `cairnctl`).

#![forbid(unsafe_code)]

use cairn_init::{applet, console::ctl, init, Applet};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match applet(args.first().map(|a| a.as_os_str())) {
        Applet::Cairnctl => std::process::exit(ctl::main(&args)),
        Applet::Container => std::process::exit(cairn_init::container::main(&args)),
        Applet::Reaper => std::process::exit(cairn_init::container::reaper_main(&args)),
        Applet::Update => std::process::exit(cairn_init::update::main()),
        Applet::NodeConfig => std::process::exit(cairn_init::update::node::main()),
        Applet::Init => init::run(),
    }
}
