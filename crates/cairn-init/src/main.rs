//! cairn-init entry point: a multi-call binary (`init` or `cairnctl`).

#![forbid(unsafe_code)]

use cairn_init::{applet, console::ctl, init, Applet};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match applet(args.first().map(|a| a.as_os_str())) {
        Applet::Cairnctl => std::process::exit(ctl::main(&args)),
        #[cfg(feature = "containers")]
        Applet::Container => std::process::exit(cairn_init::container::main(&args)),
        #[cfg(feature = "containers")]
        Applet::Reaper => std::process::exit(cairn_init::container::reaper_main(&args)),
        #[cfg(not(feature = "containers"))]
        Applet::Container | Applet::Reaper => {
            eprintln!("cairn-init: built without container support");
            std::process::exit(126)
        }
        Applet::Update => std::process::exit(cairn_init::update::main()),
        Applet::NodeConfig => std::process::exit(cairn_init::update::node::main()),
        Applet::Init => init::run(),
    }
}
