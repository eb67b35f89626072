//! A small mutational fuzzer that runs on the pinned stable toolchain (cargo-fuzz and AFL
//! need nightly or tools this machine lacks): seeds and a dictionary per target, byte- and
//! token-level mutations, inputs that grow the corpus kept by a cheap novelty signal (the
//! outcome class a target reports), and for every input three checks:
//!
//! - **panic**: caught with `catch_unwind`; the input is saved and the run fails;
//! - **hang**: a watchdog thread aborts the process when one input runs longer than
//!   [`HANG`], after writing the input next to the others;
//! - **unbounded allocation**: a counting global allocator measures the peak of live bytes
//!   during each input; more than [`MEMORY`] is a failure. (An allocation the machine
//!   cannot satisfy aborts the process; the input being run is always in
//!   `<target>-current.bin`, written before it runs.)
//!
//! Failing inputs go to `$CARGO_TARGET_TMPDIR/fuzz/`; copied into `tests/fuzz/regressions/
//! <target>/`, they run first on every later run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One input may run this long before the watchdog declares a hang.
pub const HANG: Duration = Duration::from_secs(10);
/// Peak live bytes one input may allocate.
pub const MEMORY: usize = 256 << 20;

/// Counts live heap bytes per thread, so each fuzz target (one per test thread) measures its
/// own inputs.
pub struct CountingAllocator;

thread_local! {
    static LIVE: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
    static PEAK: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn account(delta: isize) {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| {
            if now > p.get() {
                p.set(now);
            }
        });
    });
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// How long each target runs: `TOLLGATE_FUZZ_SECONDS` (CI runs a short smoke; the
/// documented full run is 600 s per target).
pub fn budget() -> Duration {
    let secs = std::env::var("TOLLGATE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs.max(0.1))
}

/// xorshift64*: deterministic for a seed, so a run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    pub corpus: usize,
    pub failures: Vec<String>,
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: std::sync::Once = std::sync::Once::new();

fn quiet_panics() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = PANIC_MESSAGE.with(|m| {
                let mut m = m.borrow_mut();
                if m.is_some() {
                    return false;
                }
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                *m = Some(format!("{payload}{location}"));
                true
            });
            if !caught {
                default(info);
            }
        }));
    });
}

/// Where inputs that failed are written.
pub fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Inputs saved from earlier failures: run before anything else.
fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/regressions")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok().map(|b| (e.path(), b)))
        .collect();
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

/// Runs `target` on mutated inputs for `budget`. `target` returns an outcome class (any
/// small number); an input whose class is new joins the corpus.
pub fn run(
    name: &str,
    seeds: Vec<Vec<u8>>,
    dictionary: &[&[u8]],
    budget: Duration,
    seed: u64,
    target: impl Fn(&[u8]) -> u64,
) -> Report {
    quiet_panics();
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut corpus: Vec<Vec<u8>> = seeds;
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut seen_classes = std::collections::HashSet::new();
    let current = std::fs::File::create(out_dir().join(format!("{name}-current.bin"))).ok();

    // The watchdog: the start of the input running now (0: none), checked every 100 ms.
    let started_ms = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let input_copy: Arc<Mutex<Vec<u8>>> = Arc::default();
    let epoch = Instant::now();
    let watchdog = {
        let (started_ms, running, input_copy, name) = (
            started_ms.clone(),
            running.clone(),
            input_copy.clone(),
            name.to_string(),
        );
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let s = started_ms.load(Ordering::Relaxed);
                if s != 0 && epoch.elapsed().as_millis() as u64 > s + HANG.as_millis() as u64 {
                    let path = out_dir().join(format!("{name}-hang.bin"));
                    let input = input_copy.lock().map(|i| i.clone()).unwrap_or_default();
                    let _ = std::fs::write(&path, &input);
                    eprintln!(
                        "fuzz {name}: an input ran over {HANG:?}; saved to {}",
                        path.display()
                    );
                    std::process::abort();
                }
            }
        })
    };

    let mut queue: std::collections::VecDeque<Vec<u8>> = regressions(name).into();
    queue.extend(corpus.iter().cloned());
    let deadline = Instant::now() + budget;
    let executions = AtomicUsize::new(0);
    while Instant::now() < deadline {
        let input = match queue.pop_front() {
            Some(i) => i,
            None => mutate(&mut rng, &corpus, dictionary),
        };
        if let Some(f) = &current {
            let _ = f.set_len(0);
            let _ = f.write_at(&input, 0);
        }
        if let Ok(mut c) = input_copy.lock() {
            c.clear();
            c.extend_from_slice(&input);
        }
        let base = LIVE.with(|l| l.get());
        PEAK.with(|p| p.set(base));
        PANIC_MESSAGE.with(|m| m.borrow_mut().take());
        started_ms.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        started_ms.store(0, Ordering::Relaxed);
        executions.fetch_add(1, Ordering::Relaxed);
        let peak = PEAK.with(|p| p.get()) - base;
        let failure = match outcome {
            Err(_) => Some(format!(
                "panic: {}",
                PANIC_MESSAGE
                    .with(|m| m.borrow_mut().take())
                    .unwrap_or_default()
            )),
            Ok(_) if peak > MEMORY as isize => Some(format!("allocated {peak} bytes at peak")),
            Ok(class) => {
                if seen_classes.insert(class) || rng.chance(2000) {
                    if corpus.len() < 4096 {
                        corpus.push(input.clone());
                    } else {
                        let i = rng.below(corpus.len());
                        corpus[i] = input.clone();
                    }
                }
                None
            }
        };
        if let Some(why) = failure {
            let n = report.failures.len();
            let path = out_dir().join(format!("{name}-failure-{n}.bin"));
            let _ = std::fs::write(&path, &input);
            report
                .failures
                .push(format!("{why} (input saved to {})", path.display()));
            if report.failures.len() >= 10 {
                break;
            }
        }
    }
    running.store(false, Ordering::Relaxed);
    let _ = watchdog.join();
    report.executions = executions.load(Ordering::Relaxed) as u64;
    report.corpus = corpus.len();
    report
}

/// One to eight mutations of a corpus entry, sometimes spliced with another.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut v = corpus[rng.below(corpus.len())].clone();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                const INTERESTING: [u8; 14] = [
                    0, 0xff, 0x7f, 0x80, b'\r', b'\n', b' ', b'\t', b':', b'0', b'9', b'"', b'\\',
                    b'%',
                ];
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 | 3 if !dictionary.is_empty() => {
                let word = dictionary[rng.below(dictionary.len())];
                let i = rng.below(len + 1);
                v.splice(i..i, word.iter().copied());
            }
            4 if !dictionary.is_empty() && len > 0 => {
                // Replace a token (up to the next separator) with a dictionary word.
                let word = dictionary[rng.below(dictionary.len())];
                let i = rng.below(len);
                let end = v[i..]
                    .iter()
                    .position(|b| matches!(b, b' ' | b'\n' | b'\r' | b':' | b',' | b'"'))
                    .map_or(len, |p| i + p);
                v.splice(i..end, word.iter().copied());
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            6 if len > 0 => {
                // Duplicate a range (repetition finds quadratic paths and limits).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let copy: Vec<u8> = v[i..i + n].to_vec();
                let times = 1 + rng.below(64);
                let at = rng.below(v.len() + 1);
                for _ in 0..times {
                    v.splice(at..at, copy.iter().copied());
                }
            }
            7 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            8 if corpus.len() > 1 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            9 if len > 0 => {
                v.truncate(rng.below(len));
            }
            _ => {
                // Swap two ASCII digits for a long number (lengths, sizes, ports).
                let i = rng.below(len + 1);
                let digits = [
                    "0",
                    "-1",
                    "4294967296",
                    "18446744073709551616",
                    "999999999999",
                ];
                v.splice(i..i, digits[rng.below(digits.len())].bytes());
            }
        }
        if v.len() > 1 << 20 {
            v.truncate(1 << 20);
        }
    }
    v
}
