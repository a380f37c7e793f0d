//! A guided tour of cairn's tiered store over the in-memory tiers: small and large puts, an
//! overwrite, a range read, a delete, and a crash in the middle of a large put followed by
//! recovery. Prints what happened at each step and what each tier holds.
//!
//! ```text
//! cargo run --release -p cairn-adapters --example tour
//! ```

use cairn_adapters::fault::{Fault, Faults, Faulty, Op};
use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::{BlockingStore, Location, PutOptions, TieredStore};
use cairn_core::{ByteRange, Config};
use std::sync::Arc;

type Store = BlockingStore<Faulty<Arc<MemoryHv>>, Faulty<Arc<MemoryLt>>, Faulty<Arc<MemoryLog>>>;

struct Tiers {
    hv: Arc<MemoryHv>,
    lt: Arc<MemoryLt>,
    log: Arc<MemoryLog>,
    faults: Arc<Faults>,
}

impl Tiers {
    fn open(&self) -> Store {
        let f = &self.faults;
        let builder = TieredStore::builder(
            Faulty::new(self.hv.clone(), f.clone()),
            Faulty::new(self.lt.clone(), f.clone()),
            Faulty::new(self.log.clone(), f.clone()),
        )
        .config(Config {
            inline_threshold: 64 * 1024,
            ..Config::DEFAULT
        });
        BlockingStore::from_builder(builder).expect("valid config")
    }

    fn show(&self) {
        println!(
            "   tiers: {} high-volume row(s), {} blob(s), {} change-log entr(ies)",
            self.hv.len(),
            self.lt.len(),
            self.log.len()
        );
    }
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tiers = Tiers {
        hv: Arc::new(MemoryHv::new()),
        lt: Arc::new(MemoryLt::new()),
        log: Arc::new(MemoryLog::new()),
        faults: Faults::new(),
    };
    let store = tiers.open();
    println!("cairn tour: inline threshold 64 KiB; objects above it go to the blob tier");

    step(1, "small put: 'notes/hello' (12 bytes) is stored inline");
    store.put(
        "notes/hello",
        "hello, cairn",
        &PutOptions::default().content_type("text/plain"),
    )?;
    let info = store.head("notes/hello")?.expect("just written");
    println!(
        "   head: {} bytes, {:?}, content type {:?}",
        info.meta.size,
        info.location,
        info.meta.content_type()
    );
    tiers.show();

    step(
        2,
        "large put: 'videos/cat' (1 MiB) goes to the blob tier behind a tombstone",
    );
    let video: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    store.put("videos/cat", video.clone(), &PutOptions::default())?;
    let Some(Location::LongTerm(first)) = store.head("videos/cat")?.map(|i| i.location) else {
        unreachable!("1 MiB is above the threshold")
    };
    println!("   tombstone points at revision {first}");
    tiers.show();

    step(
        3,
        "overwrite: a new 2 MiB version commits, then cleanup deletes the old blob",
    );
    let video2: Vec<u8> = video.iter().chain(video.iter()).copied().collect();
    store.put("videos/cat", video2.clone(), &PutOptions::default())?;
    let Some(Location::LongTerm(second)) = store.head("videos/cat")?.map(|i| i.location) else {
        unreachable!()
    };
    println!("   tombstone now points at revision {second}; the old one is gone");
    tiers.show();

    step(
        4,
        "range read: bytes 1000..=1009 of the blob, streamed from the blob tier",
    );
    let part = store
        .get_range(
            "videos/cat",
            ByteRange::Inclusive {
                start: 1000,
                end: 1009,
            },
        )?
        .expect("present");
    let bytes = part.body.bytes_blocking()?;
    println!("   got {:?} (span {:?})", &bytes[..], part.span);
    assert_eq!(&bytes[..], &video2[1000..1010]);

    step(
        5,
        "delete: the tombstone is removed (the commit point), then its blob",
    );
    store.delete("videos/cat")?;
    println!(
        "   get now: {:?}",
        store.get("videos/cat")?.map(|o| o.meta.size)
    );
    tiers.show();

    step(
        6,
        "crash: a large put dies after writing its blob, before committing",
    );
    store.put("videos/dog", video.clone(), &PutOptions::default())?;
    tiers.faults.inject(
        Op::HvCas,
        Fault::Run(Arc::new(|| panic!("simulated crash"))),
    );
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.put("videos/dog", video2.clone(), &PutOptions::default())
    }));
    std::panic::set_hook(hook);
    assert!(crashed.is_err());
    println!("   the process died mid-put: its new blob and its change-log entry are left behind");
    tiers.show();

    step(
        7,
        "restart and recover: the log entry says which blob to reclaim",
    );
    let restarted = tiers.open();
    let report = restarted.recover()?;
    println!(
        "   recovery examined {} entr(ies), cleaned {}, deleted {} blob(s)",
        report.entries, report.cleaned, report.blobs_deleted
    );
    let kept = restarted
        .get_bytes("videos/dog")?
        .expect("the committed version survives");
    println!(
        "   'videos/dog' still reads its last committed version ({} bytes)",
        kept.len()
    );
    assert_eq!(kept.len(), video.len());
    tiers.show();
    assert_eq!((tiers.lt.len(), tiers.log.len()), (1, 0));
    println!("\ndone: every blob is referenced, the change log is empty");
    Ok(())
}
