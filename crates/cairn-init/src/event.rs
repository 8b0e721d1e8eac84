//! The one event loop of PID 1. It knows no subsystem: a source registers
//! its file descriptors (each with a handler) and its next deadline (a
//! timer), and the loop calls it back when one is ready or due.
//!
//! The loop is an `epoll` set in level-triggered mode. One turn:
//! 1. ask every timer for its next deadline and wait until the earliest
//!    one, or until an fd is ready (at most [`MAX_EVENTS`] at a time);
//! 2. call the handler of each ready fd once;
//! 3. call every timer whose deadline has passed.
//!
//! Fairness comes from the budget: a handler does a bounded amount of work
//! per call (a source documents its own share, e.g. 64 KiB of a service's
//! output) and returns. If more is waiting, its fd is still readable, so
//! the next turn calls it again, after every other ready source had its
//! turn. A flood on one fd can slow its own source down, never starve the
//! others.
//!
//! Each call runs under `catch_unwind`: a panicking source is reported
//! through the `on_panic` callback given to [`EventLoop::turn`] (which
//! decides between carrying on and rebooting) and the loop goes on.
//!
//! The context `T` owns the sources; handlers get `&mut T` and the loop
//! itself, so they can register and deregister fds as they come and go.
//! This is the shape of sudo-rs's `exec/event.rs`, on epoll.

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;

/// Ready fds taken from the kernel in one turn.
pub const MAX_EVENTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("cannot create the epoll set: {0}")]
    Create(Errno),
    #[error("cannot register {name} with the event loop: {errno}")]
    Register { name: &'static str, errno: Errno },
}

/// Identifies one registered fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(usize);

/// Called when a registered fd is ready.
pub type Handler<T> = fn(&mut T, &mut EventLoop<T>, Token);
/// When a timer is next due (`None`: not now).
pub type Due<T> = fn(&T) -> Option<Instant>;
/// Called once a timer's deadline has passed.
pub type Fire<T> = fn(&mut T, &mut EventLoop<T>, Instant);

struct Slot<T> {
    name: &'static str,
    handler: Handler<T>,
}

struct Timer<T> {
    name: &'static str,
    due: Due<T>,
    fire: Fire<T>,
}

/// The registry and the loop.
pub struct EventLoop<T> {
    epoll: OwnedFd,
    slots: Vec<Option<Slot<T>>>,
    timers: Vec<Timer<T>>,
    events: Vec<epoll::Event>,
}

impl<T> EventLoop<T> {
    pub fn new() -> Result<Self, EventError> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(EventError::Create)?;
        Ok(EventLoop {
            epoll,
            slots: Vec::new(),
            timers: Vec::new(),
            events: Vec::with_capacity(MAX_EVENTS),
        })
    }

    /// Calls `handler` whenever `fd` is readable (or hung up, or in error).
    /// The caller keeps `fd` open while it is registered and deregisters
    /// it (or just closes it: the kernel then drops it from the set).
    pub fn register(
        &mut self,
        fd: impl AsFd,
        name: &'static str,
        handler: Handler<T>,
    ) -> Result<Token, EventError> {
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        epoll::add(
            &self.epoll,
            fd,
            EventData::new_u64(index as u64),
            EventFlags::IN,
        )
        .map_err(|errno| EventError::Register { name, errno })?;
        self.slots[index] = Some(Slot { name, handler });
        Ok(Token(index))
    }

    /// Stops watching `fd`; its token may be handed out again.
    pub fn deregister(&mut self, fd: impl AsFd, token: Token) {
        let _ = epoll::delete(&self.epoll, fd);
        self.forget(token);
    }

    /// Frees `token` whose fd was already closed (closing removed it from
    /// the set).
    pub fn forget(&mut self, token: Token) {
        if let Some(s) = self.slots.get_mut(token.0) {
            *s = None;
        }
    }

    /// What a registered fd waits for: to be readable (`read`; `false`
    /// pauses it without giving up its token, the data waits in the
    /// kernel) and to take more output (`write`). Hang-ups and errors are
    /// always reported.
    pub fn set_interest(&mut self, fd: impl AsFd, token: Token, read: bool, write: bool) {
        let mut flags = EventFlags::empty();
        if read {
            flags |= EventFlags::IN;
        }
        if write {
            flags |= EventFlags::OUT;
        }
        let _ = epoll::modify(&self.epoll, fd, EventData::new_u64(token.0 as u64), flags);
    }

    /// Adds a timer: `due` is asked every turn for the next deadline;
    /// `fire` runs once it has passed.
    pub fn timer(&mut self, name: &'static str, due: Due<T>, fire: Fire<T>) {
        self.timers.push(Timer { name, due, fire });
    }

    /// How many fds are registered.
    pub fn registered(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The earliest deadline of all timers.
    pub fn next_deadline(&self, ctx: &T) -> Option<Instant> {
        self.timers.iter().filter_map(|t| (t.due)(ctx)).min()
    }

    /// One turn (see the module docs). `on_panic` is told which source
    /// panicked.
    pub fn turn(&mut self, ctx: &mut T, on_panic: fn(&mut T, &'static str)) {
        let timeout = self
            .next_deadline(ctx)
            .map(|at| at.saturating_duration_since(Instant::now()));
        self.wait(timeout);
        let ready: Vec<usize> = self.events.iter().map(|e| e.data.u64() as usize).collect();
        for index in ready {
            // A handler earlier in this turn may have deregistered it.
            let Some(Some(slot)) = self.slots.get(index) else {
                continue;
            };
            let (name, handler) = (slot.name, slot.handler);
            let token = Token(index);
            if catch_unwind(AssertUnwindSafe(|| handler(ctx, self, token))).is_err() {
                on_panic(ctx, name);
            }
        }
        for i in 0..self.timers.len() {
            let (name, due, fire) = (self.timers[i].name, self.timers[i].due, self.timers[i].fire);
            // A fresh clock per timer: one whose deadline is "now" is due.
            let now = Instant::now();
            if due(ctx).is_some_and(|at| at <= now)
                && catch_unwind(AssertUnwindSafe(|| fire(ctx, self, now))).is_err()
            {
                on_panic(ctx, name);
            }
        }
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        // Round up: waking a little early would only spin until the
        // deadline is really reached.
        let ts = timeout.map(|d| {
            let d = d + Duration::from_nanos(999_999);
            let ms = d.as_millis().min(i32::MAX as u128) as u64;
            rustix::time::Timespec {
                tv_sec: (ms / 1000) as i64,
                tv_nsec: ((ms % 1000) * 1_000_000) as i64,
            }
        });
        self.events.clear();
        match epoll::wait(&self.epoll, spare_capacity(&mut self.events), ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                crate::info!("event loop: epoll_wait failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Ctx {
        reads: Vec<(&'static str, usize)>,
        a: Option<OwnedFd>,
        b: Option<OwnedFd>,
        due: Option<Instant>,
        boom: Option<Instant>,
        fired: u32,
        panics: Vec<&'static str>,
    }

    /// Reads one byte per call: a source with a budget of one.
    fn read_one(ctx: &mut Ctx, _: &mut EventLoop<Ctx>, fd: &'static str) {
        let f = if fd == "a" { &ctx.a } else { &ctx.b };
        let mut buf = [0u8; 1];
        if let Some(f) = f {
            if rustix::io::read(f, &mut buf).unwrap_or(0) == 1 {
                ctx.reads.push((fd, 1));
            }
        }
    }

    #[test]
    fn a_busy_source_does_not_starve_a_quiet_one() {
        let mut ev = EventLoop::<Ctx>::new().unwrap();
        let (ar, aw) = rustix::pipe::pipe().unwrap();
        let (br, bw) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&aw, &[b'x'; 1000]).unwrap();
        let mut ctx = Ctx::default();
        ev.register(&ar, "a", |c, l, _| read_one(c, l, "a"))
            .unwrap();
        ev.register(&br, "b", |c, l, _| read_one(c, l, "b"))
            .unwrap();
        ctx.a = Some(ar);
        ctx.b = Some(br);
        ev.turn(&mut ctx, |_, _| {});
        rustix::io::write(&bw, b"y").unwrap();
        ev.turn(&mut ctx, |_, _| {});
        // The flooded pipe got one read per turn and the quiet one was
        // served on the turn its byte came.
        assert_eq!(ctx.reads, [("a", 1), ("a", 1), ("b", 1)]);
    }

    #[test]
    fn timers_fire_when_due_and_panics_are_reported() {
        let mut ev = EventLoop::<Ctx>::new().unwrap();
        ev.timer(
            "t",
            |c| c.due,
            |c, _, _| {
                c.fired += 1;
                c.due = None;
            },
        );
        ev.timer("boom", |c| c.boom, |_, _, _| panic!("boom"));
        let at = Instant::now() + Duration::from_millis(20);
        let mut ctx = Ctx {
            due: Some(at),
            boom: Some(at),
            ..Ctx::default()
        };
        let start = Instant::now();
        ev.turn(&mut ctx, |c, name| c.panics.push(name));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(ctx.fired, 1);
        assert_eq!(ctx.panics, ["boom"]);
        // Nothing due, nothing registered: a bounded wait is not asked
        // for, so only check the registry.
        assert_eq!(ev.registered(), 0);
    }

    #[test]
    fn deregistered_and_paused_fds_are_not_called() {
        let mut ev = EventLoop::<Ctx>::new().unwrap();
        let (ar, aw) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&aw, b"xx").unwrap();
        let t = ev
            .register(&ar, "a", |c, l, _| read_one(c, l, "a"))
            .unwrap();
        let mut ctx = Ctx {
            due: Some(Instant::now()),
            ..Ctx::default()
        };
        ev.timer("wake", |c| c.due, |_, _, _| {});
        ctx.a = Some(ar);
        ev.set_interest(ctx.a.as_ref().unwrap(), t, false, false);
        ev.turn(&mut ctx, |_, _| {});
        assert!(ctx.reads.is_empty());
        ev.set_interest(ctx.a.as_ref().unwrap(), t, true, false);
        ev.turn(&mut ctx, |_, _| {});
        assert_eq!(ctx.reads.len(), 1);
        ev.deregister(ctx.a.as_ref().unwrap(), t);
        ev.turn(&mut ctx, |_, _| {});
        assert_eq!(ctx.reads.len(), 1);
        assert_eq!(ev.registered(), 0);
    }
}
