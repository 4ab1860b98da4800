//! What a consumer has finished, per partition, when records finish out of order (concurrent
//! handlers): the offset to commit is the lowest record still unfinished, and the records
//! finished above it go into the commit's metadata, so a restart skips them instead of
//! handling them again (Parallel Consumer's scheme).
//!
//! The metadata is `spa1:` followed by the finished offsets as ranges relative to the committed
//! offset (`spa1:2-5,9`): versioned by its prefix; anything else — another framework's
//! metadata, a corrupt map — is logged and ignored, never read as "finished". Kafka keeps at
//! most 4 KiB of metadata (`offset.metadata.max.bytes`): a map that would not fit keeps its
//! lowest ranges, and what finished above them is handled again after a restart (logged).
//!
//! Each assignment of a partition has an epoch: a record of a revoked assignment that
//! finishes later does not count for the next one.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// The prefix (and version) of spa-dat's commit metadata.
const MAGIC: &str = "spa1:";
/// The most metadata written per partition: under Kafka's default 4,096 bytes.
const MAX_METADATA: usize = 4_000;

/// Progress of every partition of the current assignment.
#[derive(Default)]
pub(super) struct Progress {
    partitions: Mutex<Vec<PartitionProgress>>,
    epochs: AtomicU64,
}

struct PartitionProgress {
    topic: Arc<str>,
    partition: i32,
    epoch: u64,
    /// Records seen from the lowest unfinished on, in offset order, and whether each finished:
    /// appending and finishing in order cost a push and a pop.
    window: VecDeque<(i64, bool)>,
    /// One past the highest offset seen.
    next: i64,
    /// Finished in an earlier assignment (the commit's metadata): not delivered again.
    skip: BTreeSet<i64>,
    /// The committed metadata was read for this assignment.
    loaded: bool,
    changed: bool,
    warned_truncated: bool,
}

/// A delivered record's claim on its partition's assignment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    epoch: u64,
}

/// What to do with a record just read.
pub(super) enum Arrival {
    /// Deliver it; finish it with this ticket.
    Deliver(Ticket),
    /// Finished in an earlier run: skip it.
    Skip,
    /// Its partition's committed metadata is not read yet for this assignment: [`Progress::load`]
    /// it, then ask again.
    Unloaded,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PartitionProgress>> {
        // Each change is a set insert or removal: consistent after a panic elsewhere.
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the committed metadata of a partition just assigned (`None`: none committed).
    pub(super) fn load(&self, topic: &Arc<str>, partition: i32, committed: Option<(i64, &str)>) {
        let skip = committed
            .map(|(offset, metadata)| decode(topic, partition, offset, metadata))
            .unwrap_or_default();
        let mut partitions = self.lock();
        let entry = self.entry(&mut partitions, topic, partition);
        entry.skip = skip;
        entry.loaded = true;
    }

    fn entry<'a>(
        &self,
        partitions: &'a mut Vec<PartitionProgress>,
        topic: &Arc<str>,
        partition: i32,
    ) -> &'a mut PartitionProgress {
        let index = match partitions.iter().position(|p| {
            p.partition == partition && (Arc::ptr_eq(&p.topic, topic) || p.topic == *topic)
        }) {
            Some(index) => index,
            None => {
                partitions.push(PartitionProgress {
                    topic: Arc::clone(topic),
                    partition,
                    epoch: self.epochs.fetch_add(1, Ordering::Relaxed),
                    window: VecDeque::new(),
                    next: 0,
                    skip: BTreeSet::new(),
                    loaded: false,
                    changed: false,
                    warned_truncated: false,
                });
                partitions.len() - 1
            }
        };
        &mut partitions[index]
    }

    /// A record was read: deliver it, or skip it when an earlier run finished it. One lock per
    /// record: whether the partition's metadata was read is answered here too.
    pub(super) fn arrived(&self, topic: &Arc<str>, partition: i32, offset: i64) -> Arrival {
        let mut partitions = self.lock();
        let entry = self.entry(&mut partitions, topic, partition);
        if !entry.loaded {
            return Arrival::Unloaded;
        }
        if offset < entry.next {
            // Read again (a seek, or librdkafka refetching): the window has it already.
            if entry.window.iter().any(|(o, _)| *o == offset) {
                return Arrival::Deliver(Ticket { epoch: entry.epoch });
            }
        }
        entry.next = entry.next.max(offset + 1);
        if !entry.skip.is_empty() && entry.skip.remove(&offset) {
            entry.window.push_back((offset, true));
            entry.prune();
            entry.changed = true;
            return Arrival::Skip;
        }
        entry.window.push_back((offset, false));
        Arrival::Deliver(Ticket { epoch: entry.epoch })
    }

    /// A delivered record was handled (or dead-lettered). Dropped when its partition was
    /// revoked since: the next owner handles it again.
    pub(super) fn finished(&self, topic: &Arc<str>, partition: i32, offset: i64, ticket: Ticket) {
        let mut partitions = self.lock();
        let Some(entry) = partitions.iter_mut().find(|p| {
            p.partition == partition
                && p.epoch == ticket.epoch
                && (Arc::ptr_eq(&p.topic, topic) || p.topic == *topic)
        }) else {
            tracing::debug!(%topic, partition, offset, "finished after its partition was revoked; not counted");
            return;
        };
        // Offsets are in order in the window: the first entry is mostly the one.
        let index = match entry.window.front() {
            Some((first, _)) if *first == offset => Some(0),
            _ => entry.window.binary_search_by_key(&offset, |(o, _)| *o).ok(),
        };
        if let Some(index) = index {
            entry.window[index].1 = true;
            entry.prune();
            entry.changed = true;
        }
    }

    /// Partitions revoked: their progress ends here (stored first by the caller).
    pub(super) fn revoke(&self, revoked: &TopicPartitionList) {
        let gone: Vec<(String, i32)> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        self.lock().retain(|p| {
            !gone
                .iter()
                .any(|(t, n)| *n == p.partition && **t == *p.topic)
        });
    }

    /// Hands each changed partition's commit to librdkafka's offset store: the lowest
    /// unfinished offset, with the finished ones above it as metadata.
    pub(super) fn store<C: ConsumerContext, K: Consumer<C>>(&self, consumer: &K) {
        let mut list = TopicPartitionList::new();
        {
            let mut partitions = self.lock();
            if crate::metrics::enabled() {
                for entry in partitions.iter() {
                    let commit = entry.commit_offset();
                    crate::metrics::kafka_progress(
                        &entry.topic,
                        entry.partition,
                        entry.next - commit,
                        entry.finished_above().count(),
                    );
                }
            }
            for entry in partitions.iter_mut().filter(|p| p.changed) {
                entry.changed = false;
                let commit = entry.commit_offset();
                let (metadata, truncated) = encode(commit, entry.finished_above());
                if truncated && !entry.warned_truncated {
                    entry.warned_truncated = true;
                    tracing::warn!(topic = %entry.topic, partition = entry.partition, commit, "the finished-offset map outgrows Kafka's commit metadata; records finished above the part that fits are handled again after a restart");
                }
                match list.add_partition_offset(
                    &entry.topic,
                    entry.partition,
                    Offset::Offset(commit),
                ) {
                    Ok(()) => {
                        if let Some(mut element) =
                            list.find_partition(&entry.topic, entry.partition)
                        {
                            element.set_metadata(metadata);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(topic = %entry.topic, partition = entry.partition, %error, "offset not stored")
                    }
                }
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(error) = consumer.store_offsets(&list) {
            // Partitions revoked meanwhile: their next owner handles those records again.
            tracing::debug!(%error, "offsets not stored");
        }
    }
}

impl PartitionProgress {
    /// The offset to commit: the lowest unfinished record, else one past the highest seen.
    fn commit_offset(&self) -> i64 {
        self.window.front().map_or(self.next, |(offset, _)| *offset)
    }

    /// The finished records above the commit offset, in order.
    fn finished_above(&self) -> impl Iterator<Item = i64> + '_ {
        self.window
            .iter()
            .filter(|(_, done)| *done)
            .map(|(o, _)| *o)
    }

    /// Drops the finished records the commit offset covers.
    fn prune(&mut self) {
        while self.window.front().is_some_and(|(_, done)| *done) {
            self.window.pop_front();
        }
    }
}

/// The metadata for `finished` (ascending, all above `commit`), and whether it had to be cut
/// short.
fn encode(commit: i64, finished: impl Iterator<Item = i64>) -> (String, bool) {
    let mut text = String::from(MAGIC);
    let mut iter = finished.map(|o| o - commit).peekable();
    let mut first = true;
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        let range = if start == end {
            format!("{start}")
        } else {
            format!("{start}-{end}")
        };
        if text.len() + range.len() + 1 > MAX_METADATA {
            return (text, true);
        }
        if !first {
            text.push(',');
        }
        first = false;
        text.push_str(&range);
    }
    (text, false)
}

/// The finished offsets in a partition's committed metadata; empty for none, another
/// framework's, or a map that cannot be read (logged).
fn decode(topic: &str, partition: i32, commit: i64, metadata: &str) -> BTreeSet<i64> {
    if metadata.is_empty() {
        return BTreeSet::new();
    }
    let Some(ranges) = metadata.strip_prefix(MAGIC) else {
        tracing::warn!(%topic, partition, metadata = %metadata.chars().take(64).collect::<String>(), "commit metadata that is not spa-dat's is ignored: records are handled from the committed offset");
        return BTreeSet::new();
    };
    let parse = || -> Option<BTreeSet<i64>> {
        let mut finished = BTreeSet::new();
        for range in ranges.split(',').filter(|r| !r.is_empty()) {
            let (start, end) = match range.split_once('-') {
                Some((start, end)) => (start.parse::<i64>().ok()?, end.parse::<i64>().ok()?),
                None => {
                    let at = range.parse::<i64>().ok()?;
                    (at, at)
                }
            };
            if start < 1 || end < start || end - start > 1_000_000 {
                return None;
            }
            finished.extend((start..=end).map(|delta| commit + delta));
        }
        Some(finished)
    };
    match parse() {
        Some(finished) => finished,
        None => {
            tracing::warn!(%topic, partition, "spa-dat commit metadata that cannot be read is ignored: records are handled from the committed offset");
            BTreeSet::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_is_the_lowest_unfinished_and_the_finished_above_it_are_the_metadata() {
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None);
        let tickets: Vec<Ticket> = (0..10)
            .map(|offset| match progress.arrived(&topic, 0, offset) {
                Arrival::Deliver(ticket) => ticket,
                Arrival::Skip | Arrival::Unloaded => panic!("nothing to skip"),
            })
            .collect();
        for offset in [0, 1, 3, 4, 5, 8] {
            progress.finished(&topic, 0, offset, tickets[offset as usize]);
        }
        let partitions = progress.lock();
        let entry = &partitions[0];
        assert_eq!(entry.commit_offset(), 2);
        assert_eq!(
            encode(2, entry.finished_above()),
            ("spa1:1-3,6".to_owned(), false)
        );
    }

    #[test]
    fn a_restart_skips_what_the_metadata_says_finished_and_ignores_foreign_metadata() {
        assert_eq!(
            decode("t", 0, 2, "spa1:1-3,6"),
            BTreeSet::from([3, 4, 5, 8])
        );
        assert!(decode("t", 0, 2, "some-other-framework:{\"x\":1}").is_empty());
        assert!(decode("t", 0, 2, "spa1:garbage").is_empty());
        assert!(decode("t", 0, 2, "spa1:5-3").is_empty());
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, Some((2, "spa1:1-3,6")));
        let delivered: Vec<i64> = (2..10)
            .filter(|offset| matches!(progress.arrived(&topic, 0, *offset), Arrival::Deliver(_)))
            .collect();
        assert_eq!(delivered, [2, 6, 7, 9]);
    }

    #[test]
    fn a_map_too_large_for_kafka_keeps_its_lowest_ranges() {
        let (metadata, truncated) = encode(0, (0..5_000).map(|i| 10 + i * 2));
        assert!(truncated && metadata.len() <= MAX_METADATA);
        assert!(metadata.starts_with("spa1:10,12,14"));
    }

    #[test]
    fn a_record_finished_after_its_partition_was_revoked_does_not_count() {
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None);
        let Arrival::Deliver(old) = progress.arrived(&topic, 0, 5) else {
            panic!()
        };
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("t", 0);
        progress.revoke(&revoked);
        progress.load(&topic, 0, None);
        let Arrival::Deliver(_) = progress.arrived(&topic, 0, 5) else {
            panic!()
        };
        progress.finished(&topic, 0, 5, old);
        assert_eq!(
            progress.lock()[0].commit_offset(),
            5,
            "still unfinished in the new epoch"
        );
    }
}
