//! Drives a workload's closed-loop clients straight against an in-memory `Engine`, round robin,
//! with a clock that advances 1 ms every `commands_per_ms` commands: the engine benchmark's loop,
//! reusable by tests and tools. Setup commands are applied at construction, outside any timing.

use bookd_engine::{Command, Engine};

use crate::client::{ClientLoop, Counters};
use crate::workload::Workload;

/// The run's clock starts here (Unix ms, in 2027), far from zero like a real clock.
pub const RUN_START_MS: u64 = 1_800_000_000_000;

/// `clients` interleaved clients of one workload applying commands to one engine. Interleaving
/// many clients keeps as many holds live at once as a server with that many clients would.
#[derive(Debug)]
pub struct EngineRun {
    workload: Workload,
    seed: u64,
    engine: Engine,
    clients: Vec<ClientLoop>,
    next_client: usize,
    now_ms: u64,
    commands_per_ms: u64,
    /// Commands left before the clock moves 1 ms.
    commands_until_tick: u64,
    /// Engines built so far; each new engine gets new clients, seeded `seed + generation`.
    generation: u64,
    /// Counters of the clients of earlier engines.
    retired: Counters,
    /// Whether each step also builds the reply's views from the receipt, as a server does.
    replies: bool,
}

impl EngineRun {
    /// A fresh engine with the workload's setup applied, and `clients` clients seeded from `seed`.
    pub fn new(workload: Workload, seed: u64, clients: u32, commands_per_ms: u64) -> EngineRun {
        assert!(clients > 0 && commands_per_ms > 0, "a run needs clients and a clock");
        let mut run = EngineRun {
            workload,
            seed,
            engine: Engine::default(),
            clients: Vec::new(),
            next_client: 0,
            now_ms: RUN_START_MS,
            commands_per_ms,
            commands_until_tick: commands_per_ms,
            generation: 0,
            retired: Counters::default(),
            replies: false,
        };
        run.rebuild(clients);
        run
    }

    /// Replaces the engine by a freshly set-up one and the clients by new ones (holds are never
    /// freed, so a long benchmark starts over to keep its memory bounded). Not timed work.
    pub fn rebuild(&mut self, clients: u32) {
        for client in &self.clients {
            self.retired.add(client.counters());
        }
        self.engine = Engine::default();
        for command in self.workload.setup() {
            if let Err(refusal) = self.engine.apply(self.now_ms, &command) {
                panic!("setup command {command:?} refused: {refusal}");
            }
        }
        let seed = self.seed.wrapping_add(self.generation);
        self.clients = (0..clients).map(|client| self.workload.client(seed, client)).collect();
        self.next_client = 0;
        self.generation += 1;
    }

    /// Also build each command's reply (its views, as a server does before encoding them), not
    /// only the engine's decision.
    pub fn with_replies(mut self, replies: bool) -> EngineRun {
        self.replies = replies;
        self
    }

    /// One command of the next client, applied; the clock moves 1 ms every `commands_per_ms`.
    #[inline]
    pub fn step(&mut self) {
        let client = &mut self.clients[self.next_client];
        let result = self.engine.apply_receipt(self.now_ms, client.next_command());
        if self.replies {
            if let Ok(receipt) = &result {
                std::hint::black_box(self.engine.outcome(receipt));
            }
        }
        client.on_result(&result);
        self.next_turn();
    }

    /// Moves to the next client, and the clock 1 ms every `commands_per_ms` commands.
    #[inline]
    fn next_turn(&mut self) {
        self.next_client += 1;
        if self.next_client == self.clients.len() {
            self.next_client = 0;
        }
        self.commands_until_tick -= 1;
        if self.commands_until_tick == 0 {
            self.commands_until_tick = self.commands_per_ms;
            self.now_ms += 1;
        }
    }

    /// Like [`EngineRun::step`], and appends the command with its time to `recording`.
    pub fn step_recorded(&mut self, recording: &mut Vec<(u64, Command)>) {
        let client = &mut self.clients[self.next_client];
        let command = client.next_command();
        recording.push((self.now_ms, command.clone()));
        let result = self.engine.apply_receipt(self.now_ms, command);
        client.on_result(&result);
        self.next_turn();
    }

    /// Applies recorded commands to this run's engine, in order, with their times: the engine's
    /// work alone, without generating commands (as replay and standbys apply the log), asking
    /// for each command's hold bucket [`bookd_engine::PREFETCH_AHEAD`] commands ahead, as a
    /// shard does within a batch. Returns how many were refused.
    #[inline(never)]
    pub fn replay(&mut self, recording: &[(u64, Command)]) -> u64 {
        let mut refused = 0;
        for (at, (now_ms, command)) in recording.iter().enumerate() {
            if let Some((_, ahead)) = recording.get(at + bookd_engine::PREFETCH_AHEAD) {
                self.engine.prefetch_hold(ahead);
            }
            refused += u64::from(self.engine.apply_receipt(*now_ms, command).is_err());
        }
        refused
    }

    /// [`EngineRun::replay`], handing each command that took effect and its receipt to
    /// `reply` right after it was applied, as a shard answers it.
    #[inline(never)]
    pub fn replay_replying(
        &mut self,
        recording: &[(u64, Command)],
        mut reply: impl FnMut(&Engine, &Command, &bookd_engine::Receipt),
    ) -> u64 {
        let mut refused = 0;
        for (at, (now_ms, command)) in recording.iter().enumerate() {
            if let Some((_, ahead)) = recording.get(at + bookd_engine::PREFETCH_AHEAD) {
                self.engine.prefetch_hold(ahead);
            }
            match self.engine.apply_receipt(*now_ms, command) {
                Ok(receipt) => reply(&self.engine, command, &receipt),
                Err(_) => refused += 1,
            }
        }
        refused
    }

    pub fn workload(&self) -> Workload {
        self.workload
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The run's clock, Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Everything every client did, over every engine of the run.
    pub fn counters(&self) -> Counters {
        let mut total = self.retired;
        self.clients.iter().for_each(|client| total.add(client.counters()));
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_sale_run_books_and_keeps_time() {
        let mut run = EngineRun::new(Workload::FlashSale, 1, 64, 100);
        // 200 commands per client: 100 holds, each confirmed.
        for _ in 0..64 * 200 {
            run.step();
        }
        let counters = run.counters();
        assert_eq!(counters.commands, 12_800);
        assert_eq!(counters.confirmed, 6_400);
        assert_eq!(run.now_ms(), RUN_START_MS + 128);
        assert_eq!(run.engine().check_invariants(), Ok(()));
        run.rebuild(2);
        assert_eq!(run.engine().stats().holds, 0);
        run.step();
        assert_eq!(run.counters().commands, 12_801);
        assert_eq!(run.clients(), 2);
    }
}
