//! `vine pool`'s progress on the terminal: every run started or ended as a line, and on a
//! terminal, below them, one line per slot (its worker, task and elapsed time, or what it
//! waits for) redrawn in place every second.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use agentvine::pool::supervisor::Event;

/// What a slot is doing, as the block shows it.
#[derive(Debug, Clone)]
enum Slot {
    Waiting,
    Running {
        worker: String,
        task: u64,
        how: String,
        since: Instant,
    },
    Stopped(String),
}

/// The lines printed so far and the slots' block.
pub struct Progress {
    /// On a terminal: redraw the block in place.
    tty: bool,
    state: Mutex<(Vec<Slot>, usize)>,
}

impl Progress {
    /// Progress for `slots` slots; `tty` draws the live block.
    pub fn new(slots: usize, tty: bool) -> Self {
        Progress {
            tty,
            state: Mutex::new((vec![Slot::Waiting; slots], 0)),
        }
    }

    /// Prints `line` for `e` and updates the block.
    pub fn event(&self, e: &Event, line: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (slots, drawn) = &mut *st;
        let at = |slot: usize| slot.checked_sub(1);
        match e {
            Event::Started {
                slot,
                worker,
                task,
                resumes,
                ..
            } => {
                if let Some(i) = at(*slot)
                    && let Some(s) = slots.get_mut(i)
                {
                    *s = Slot::Running {
                        worker: worker.clone(),
                        task: *task,
                        how: match resumes {
                            Some(id) => format!("resumed session {id}"),
                            None => "fresh session".into(),
                        },
                        since: Instant::now(),
                    };
                }
            }
            Event::Ended { slot, .. } => {
                if let Some(i) = at(*slot)
                    && let Some(s) = slots.get_mut(i)
                {
                    *s = Slot::Waiting;
                }
            }
            Event::SlotDone { slot, why } => {
                if let Some(i) = at(*slot)
                    && let Some(s) = slots.get_mut(i)
                {
                    *s = Slot::Stopped(why.clone());
                }
            }
            Event::Worktree { .. } => {}
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            clear(&mut out, *drawn);
            let _ = writeln!(out, "{line}");
            *drawn = draw(&mut out, slots);
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Redraws the block (elapsed times move on); nothing when not on a terminal.
    pub fn tick(&self) {
        if !self.tty {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (slots, drawn) = &mut *st;
        let mut out = std::io::stdout().lock();
        clear(&mut out, *drawn);
        *drawn = draw(&mut out, slots);
        let _ = out.flush();
    }

    /// Takes the block away (before the final message).
    pub fn finish(&self) {
        if !self.tty {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        clear(&mut out, st.1);
        st.1 = 0;
        let _ = out.flush();
    }
}

/// Moves up over the `n` block lines drawn last, clearing them.
fn clear(out: &mut impl Write, n: usize) {
    for _ in 0..n {
        let _ = write!(out, "\x1b[1A\x1b[2K");
    }
    let _ = write!(out, "\r");
}

/// Draws the block; returns its line count.
fn draw(out: &mut impl Write, slots: &[Slot]) -> usize {
    for (i, s) in slots.iter().enumerate() {
        let n = i + 1;
        let _ = match s {
            Slot::Waiting => writeln!(out, "  slot {n}: waiting for work"),
            Slot::Running {
                worker,
                task,
                how,
                since,
            } => writeln!(
                out,
                "  slot {n}: {worker} on task {task}, {}s ({how})",
                since.elapsed().as_secs()
            ),
            Slot::Stopped(why) => writeln!(out, "  slot {n}: stopped ({why})"),
        };
    }
    slots.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_drawn_and_cleared_with_one_line_a_slot() {
        let mut out = Vec::new();
        let slots = vec![
            Slot::Waiting,
            Slot::Running {
                worker: "pool-2".into(),
                task: 7,
                how: "fresh session".into(),
                since: Instant::now(),
            },
            Slot::Stopped("idle".into()),
        ];
        assert_eq!(draw(&mut out, &slots), 3);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "  slot 1: waiting for work\n  slot 2: pool-2 on task 7, 0s (fresh session)\n  slot 3: stopped (idle)\n"
        );
        let mut out = Vec::new();
        clear(&mut out, 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\x1b[1A\x1b[2K\x1b[1A\x1b[2K\r"
        );
    }
}
