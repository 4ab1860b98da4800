//! What a consumer has finished, per partition, when records finish out of order (concurrent
//! handlers): the offset to commit is the lowest record still unfinished, and the records
//! finished above it go into the commit's metadata, so a restart skips them instead of
//! handling them again (Parallel Consumer's scheme).
//!
//! Progress is kept as ranges, never per record: a partition holds the offsets delivered and
//! not finished (bounded by the inbox and the handlers' concurrency), one past the highest
//! offset read, and the ranges an earlier run finished that are not read yet. Everything read
//! between the commit offset and the highest read that is not in flight is finished (an offset
//! never read there — a transaction marker, a compacted record — was jumped over by the
//! consumer, as a commit past it would). So memory, and the cost of a commit, grow with the
//! records in flight, not with the records finished behind a stuck one; finishing in arrival
//! order costs a push and a pop.
//!
//! A record read below the highest read one (an offset reset, a seek) starts over from there:
//! it is delivered, and what was finished from its offset on is forgotten and handled again as
//! it is read again — after a truncation those offsets may hold other records. The commit
//! offset then goes back with it: it never passes a record delivered and unfinished.
//!
//! The metadata is `spa1:` followed by the finished offsets as ranges relative to the committed
//! offset (`spa1:2-5,9`), ascending: versioned by its prefix; anything else — another
//! framework's metadata, a corrupt map — is logged and ignored, never read as "finished", and
//! it is read into ranges (never one entry per offset), at most [`MAX_READ_METADATA`] bytes of
//! it. Kafka keeps at most 4 KiB of metadata (`offset.metadata.max.bytes`): a map that would
//! not fit keeps its lowest ranges, and what finished above them is handled again after a
//! restart (logged; `spa_kafka_commit_metadata_bytes` shows how full it is).
//!
//! The consumer commits offset and metadata itself, every `auto.commit.interval.ms`, whenever
//! either changed: librdkafka's auto-commit sends a partition only when its offset moved, so
//! while one record was stuck the metadata of everything finished after it never reached the
//! broker. A revoked partition's last commit is sent before it goes, and close commits all.
//!
//! Each assignment of a partition has an epoch: a record of a revoked assignment that
//! finishes later does not count for the next one.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// The prefix (and version) of spa-dat's commit metadata.
const MAGIC: &str = "spa1:";
/// The most metadata written per partition: under Kafka's default 4,096 bytes.
const MAX_METADATA: usize = 4_000;
/// The most metadata read: Kafka's default limit. spa-dat writes less; a longer map is not
/// ours, and a bound keeps what a hostile commit can make us hold small.
const MAX_READ_METADATA: usize = 4_096;

/// Offsets `start..=end`.
type Range = (i64, i64);

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
    /// Offsets delivered and not finished, ascending; one delivered twice (read again after a
    /// reset) is here twice. Finishing in arrival order pops the front.
    pending: VecDeque<i64>,
    /// One past the highest offset read since the assignment (or the last reset); `None`
    /// before the first.
    next: Option<i64>,
    /// Finished in an earlier assignment (the commit's metadata): ascending, disjoint, not
    /// adjacent; skipped when read. Ranges wholly read are dropped as reading passes them.
    skip: VecDeque<Range>,
    /// The committed offset the skip ranges are relative to, as loaded.
    loaded_commit: Option<i64>,
    /// The committed metadata was read for this assignment.
    loaded: bool,
    /// Something arrived or finished since the last commit was built.
    changed: bool,
    /// The commit last handed to librdkafka: a periodic commit sends only what differs.
    sent: Option<(i64, String)>,
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

/// What [`Progress::finish_in_transaction`] made of a group of settled records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settling {
    /// They count: commit their output with the offsets.
    Finished,
    /// One is no longer in flight in its partition's assignment: drop the output. `partly`:
    /// others are, and stay in flight (only a rewind reads them again).
    Stale { partly: bool },
    /// The commit metadata cannot say one of them is finished yet: try again at a later
    /// commit.
    Deferred,
}

/// A settled record: where it was read, and its claim on that partition's assignment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member<'a> {
    pub(super) topic: &'a Arc<str>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) ticket: Ticket,
}

/// The progress of `member`'s partition in the assignment its ticket is of.
fn find<'a>(
    partitions: &'a mut [PartitionProgress],
    member: &Member<'_>,
) -> Option<&'a mut PartitionProgress> {
    partitions
        .iter_mut()
        .find(|p| p.epoch == member.ticket.epoch && p.is(member.topic, member.partition))
}

/// Which partitions [`Progress::commit`] commits.
pub(super) enum Scope<'a> {
    /// Those whose offset or metadata changed since the last commit (the periodic commit).
    Changed,
    /// Every partition that read something (close).
    All,
    /// These partitions, about to be revoked.
    Revoked(&'a TopicPartitionList),
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PartitionProgress>> {
        // Each change is a push, a pop or a field update: consistent after a panic elsewhere.
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the committed metadata of a partition just assigned (`None`: none committed).
    /// `log_end` is the partition's end (high watermark) read after the commit: no record at
    /// or above it existed when the metadata was written, so no range may claim one — a map
    /// committed by anyone with access to the group could otherwise skip the next trillion
    /// records.
    pub(super) fn load(
        &self,
        topic: &Arc<str>,
        partition: i32,
        committed: Option<(i64, &str)>,
        log_end: i64,
    ) {
        let mut skip = committed
            .map(|(offset, metadata)| decode(topic, partition, offset, metadata))
            .unwrap_or_default();
        while skip.back().is_some_and(|(start, _)| *start >= log_end) {
            skip.pop_back();
        }
        if let Some(last) = skip.back_mut() {
            last.1 = last.1.min(log_end - 1);
        }
        let mut partitions = self.lock();
        let entry = self.entry(&mut partitions, topic, partition);
        entry.skip = skip;
        entry.loaded_commit = committed.map(|(offset, _)| offset);
        entry.loaded = true;
    }

    fn entry<'a>(
        &self,
        partitions: &'a mut Vec<PartitionProgress>,
        topic: &Arc<str>,
        partition: i32,
    ) -> &'a mut PartitionProgress {
        let index = match partitions.iter().position(|p| p.is(topic, partition)) {
            Some(index) => index,
            None => {
                partitions.push(PartitionProgress {
                    topic: Arc::clone(topic),
                    partition,
                    epoch: self.epochs.fetch_add(1, Ordering::Relaxed),
                    pending: VecDeque::new(),
                    next: None,
                    skip: VecDeque::new(),
                    loaded_commit: None,
                    loaded: false,
                    changed: false,
                    sent: None,
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
        if entry.arrive(offset) {
            Arrival::Deliver(Ticket { epoch: entry.epoch })
        } else {
            Arrival::Skip
        }
    }

    /// A delivered record was handled (or dead-lettered). Dropped when its partition was
    /// revoked since: the next owner handles it again. True when it counted.
    pub(super) fn finished(
        &self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        ticket: Ticket,
    ) -> bool {
        let mut partitions = self.lock();
        let Some(entry) = partitions
            .iter_mut()
            .find(|p| p.epoch == ticket.epoch && p.is(topic, partition))
        else {
            tracing::debug!(%topic, partition, offset, "finished after its partition was revoked; not counted");
            return false;
        };
        let counted = entry.finish(offset);
        if !counted {
            tracing::debug!(%topic, partition, offset, "finished but not in flight; ignored");
        }
        counted
    }

    /// [`Progress::finished`] for a transaction, which commits the output of `members` (settled
    /// records: one message's, or a batch call's) with the offsets — all of them, or none:
    /// - `Stale` when any is no longer in flight in its partition's current assignment (revoked
    ///   or forgotten since); `partly` when others are (a batch that crossed a rebalance);
    /// - `Deferred` when the commit metadata could not name one of them as finished: above the
    ///   part of the finished-offset map that fits Kafka's 4 KiB it would be handled again after
    ///   a restart, its output committed twice. It waits until the map shrinks (its partition's
    ///   commit offset moves up);
    /// - `Finished`: all counted.
    pub(super) fn finish_in_transaction(&self, members: &[Member<'_>]) -> Settling {
        let mut partitions = self.lock();
        let live = members
            .iter()
            .filter(|m| find(&mut partitions, m).is_some_and(|entry| entry.is_pending(m.offset)))
            .count();
        if live < members.len() {
            return Settling::Stale { partly: live > 0 };
        }
        for (done, member) in members.iter().enumerate() {
            let named = find(&mut partitions, member)
                .is_some_and(|entry| entry.finish_named(member.offset));
            if !named {
                // In flight again, as they were: the group waits whole.
                for earlier in &members[..done] {
                    if let Some(entry) = find(&mut partitions, earlier) {
                        entry.insert_pending(earlier.offset);
                    }
                }
                return Settling::Deferred;
            }
        }
        Settling::Finished
    }

    /// Forgets every partition, as if all were revoked: after an aborted transaction, what
    /// was finished since the last commit is read and handled again.
    pub(super) fn forget_all(&self) {
        self.lock().clear();
    }

    /// Partitions revoked: their progress ends here (committed first by the caller).
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

    /// Commits offset and metadata of the partitions `scope` names: the lowest unfinished
    /// offset, with the finished ones above it as metadata. Ok when there is nothing to
    /// commit. An asynchronous commit's failure comes to [`Progress::commit_failed`].
    pub(super) fn commit<C: ConsumerContext, K: Consumer<C>>(
        &self,
        consumer: &K,
        mode: CommitMode,
        scope: Scope<'_>,
    ) -> KafkaResult<()> {
        let list = self.commits(&scope);
        if list.count() == 0 {
            return Ok(());
        }
        let result = consumer.commit(&list, mode);
        if result.is_err() {
            self.commit_failed(&list);
        }
        result
    }

    /// The commits `scope` asks for; marks them sent.
    pub(super) fn commits(&self, scope: &Scope<'_>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        let mut partitions = self.lock();
        for entry in partitions.iter_mut() {
            let wanted = match scope {
                Scope::Changed => entry.changed || entry.sent.is_none(),
                Scope::All => true,
                Scope::Revoked(revoked) => revoked
                    .find_partition(&entry.topic, entry.partition)
                    .is_some(),
            };
            if !wanted {
                continue;
            }
            entry.changed = false;
            let Some((commit, metadata, truncated)) = entry.to_commit() else {
                continue; // nothing read yet: nothing to commit
            };
            crate::metrics::kafka_commit_metadata(&entry.topic, entry.partition, metadata.len());
            if truncated && !entry.warned_truncated {
                entry.warned_truncated = true;
                tracing::warn!(topic = %entry.topic, partition = entry.partition, commit, "the finished-offset map outgrows Kafka's commit metadata; records finished above the part that fits are handled again after a restart");
            }
            if matches!(scope, Scope::Changed)
                && entry
                    .sent
                    .as_ref()
                    .is_some_and(|(o, m)| *o == commit && *m == metadata)
            {
                continue;
            }
            match list.add_partition_offset(&entry.topic, entry.partition, Offset::Offset(commit)) {
                Ok(()) => {
                    if let Some(mut element) = list.find_partition(&entry.topic, entry.partition) {
                        element.set_metadata(metadata.as_str());
                    }
                    entry.sent = Some((commit, metadata));
                }
                Err(error) => {
                    tracing::debug!(topic = %entry.topic, partition = entry.partition, %error, "offset not committed")
                }
            }
        }
        list
    }

    /// A commit of these partitions failed: the next periodic commit sends them again.
    pub(super) fn commit_failed(&self, offsets: &TopicPartitionList) {
        let mut partitions = self.lock();
        for element in offsets.elements() {
            if let Some(entry) = partitions
                .iter_mut()
                .find(|p| p.partition == element.partition() && *p.topic == *element.topic())
            {
                entry.sent = None;
            }
        }
    }

    /// Sets each partition's progress gauges (when metrics are enabled).
    pub(super) fn gauge(&self) {
        if !crate::metrics::enabled() {
            return;
        }
        let partitions = self.lock();
        for entry in partitions.iter() {
            let (Some(next), Some(commit)) = (entry.next, entry.commit_offset()) else {
                continue;
            };
            let finished: i64 = entry
                .finished_ranges(commit)
                .iter()
                .filter(|(start, _)| *start < next)
                .map(|(start, end)| (*end).min(next - 1) - start + 1)
                .sum();
            crate::metrics::kafka_progress(
                &entry.topic,
                entry.partition,
                (next - commit).max(0),
                usize::try_from(finished).unwrap_or(usize::MAX),
            );
        }
    }
}

impl PartitionProgress {
    fn is(&self, topic: &Arc<str>, partition: i32) -> bool {
        self.partition == partition && (Arc::ptr_eq(&self.topic, topic) || self.topic == *topic)
    }

    /// Takes a record read: false when an earlier run finished it (skip it).
    fn arrive(&mut self, offset: i64) -> bool {
        self.changed = true;
        if self.next.is_none() && self.loaded_commit.is_some_and(|commit| offset < commit) {
            // The first record read is below the commit: the log was truncated or recreated
            // (`auto.offset.reset`), and the loaded ranges name records that are not these.
            self.skip.clear();
        }
        if self.next.is_some_and(|next| offset < next) {
            // Read again: an offset reset or a seek. Start over from here; what is in flight
            // stays in flight, what an earlier run finished is not trusted past a reset.
            self.skip.clear();
            self.next = Some(offset + 1);
            self.insert_pending(offset);
            return true;
        }
        self.next = Some(offset + 1);
        while self.skip.front().is_some_and(|(_, end)| *end < offset) {
            self.skip.pop_front();
        }
        if self.skip.front().is_some_and(|(start, _)| *start <= offset) {
            return false;
        }
        self.insert_pending(offset);
        true
    }

    fn insert_pending(&mut self, offset: i64) {
        if self.pending.back().is_none_or(|last| *last <= offset) {
            self.pending.push_back(offset);
        } else {
            let at = self.pending.partition_point(|p| *p <= offset);
            self.pending.insert(at, offset);
        }
    }

    /// `offset` is delivered and not finished.
    fn is_pending(&self, offset: i64) -> bool {
        let at = self.pending.partition_point(|p| *p < offset);
        self.pending.get(at) == Some(&offset)
    }

    /// Finishes `offset` (in flight) if the commit metadata can then name it without leaving
    /// out anything it named before; else leaves it in flight and says false.
    fn finish_named(&mut self, offset: i64) -> bool {
        // Each range of the map is one of these at most, and takes at most 2 × 19 digits and
        // 2 separators: this many always fit.
        const ALWAYS_FIT: usize = (MAX_METADATA - MAGIC.len()) / 40;
        if self.pending.len() + self.skip.len() < ALWAYS_FIT {
            return self.finish(offset);
        }
        // The first offset the map leaves out (`i64::MAX`: none).
        let left_out = |entry: &PartitionProgress| {
            entry.commit_offset().map_or(i64::MAX, |commit| {
                encode(commit, &entry.finished_ranges(commit))
                    .1
                    .unwrap_or(i64::MAX)
            })
        };
        let before = left_out(self);
        if !self.finish(offset) {
            return false;
        }
        let after = left_out(self);
        // Named, and nothing named before left out by it (its range may push later ones out).
        if offset < after && after >= before {
            true
        } else {
            self.insert_pending(offset);
            false
        }
    }

    /// A delivered record finished: false when it was not in flight.
    fn finish(&mut self, offset: i64) -> bool {
        // Mostly the oldest in flight.
        let at = if self.pending.front() == Some(&offset) {
            0
        } else {
            self.pending.partition_point(|p| *p < offset)
        };
        if self.pending.get(at) != Some(&offset) {
            return false;
        }
        self.pending.remove(at);
        self.changed = true;
        true
    }

    /// The offset to commit: the lowest unfinished record, else one past the highest read —
    /// and past an earlier run's finished records that follow it. `None` before any read.
    fn commit_offset(&self) -> Option<i64> {
        let next = self.next?;
        let lowest = self.pending.front().map_or(next, |p| (*p).min(next));
        if lowest < next {
            return Some(lowest);
        }
        // Unread skip ranges start at `next` or later (ranges below were read, not adjacent).
        let passed = self
            .skip
            .iter()
            .find(|(_, end)| *end >= next)
            .filter(|(start, _)| *start <= next)
            .map_or(next, |(_, end)| end + 1);
        Some(passed)
    }

    /// The finished ranges above `commit` (this partition's [`Self::commit_offset`]),
    /// ascending, disjoint and not adjacent: what was read and is not in flight, then what an
    /// earlier run finished and is not read yet.
    fn finished_ranges(&self, commit: i64) -> Vec<Range> {
        let Some(next) = self.next else {
            return Vec::new();
        };
        let mut ranges: Vec<Range> = Vec::new();
        let mut push = |start: i64, end: i64| match ranges.last_mut() {
            Some(last) if last.1 + 1 >= start => last.1 = last.1.max(end),
            _ => ranges.push((start, end)),
        };
        // The first offset not accounted for: the commit is in flight, or `next`.
        let mut from = commit.saturating_add(1);
        for &offset in self.pending.iter().take_while(|p| **p < next) {
            if offset > from {
                push(from, offset - 1);
            }
            from = from.max(offset + 1);
        }
        if from < next {
            push(from, next - 1);
        }
        let floor = next.max(commit.saturating_add(1));
        for &(start, end) in &self.skip {
            let start = start.max(floor);
            if start <= end {
                push(start, end);
            }
        }
        ranges
    }

    /// What to commit: offset, metadata, and whether the metadata was cut short.
    fn to_commit(&self) -> Option<(i64, String, bool)> {
        let commit = self.commit_offset()?;
        let (metadata, left_out) = encode(commit, &self.finished_ranges(commit));
        Some((commit, metadata, left_out.is_some()))
    }
}

/// The metadata for `ranges` (ascending, disjoint, all above `commit`), and the first offset
/// of the ranges left out when it had to be cut short: then it keeps the lowest ranges.
fn encode(commit: i64, ranges: &[Range]) -> (String, Option<i64>) {
    let mut text = String::from(MAGIC);
    let mut piece = String::new();
    for (start, end) in ranges {
        let (relative_start, relative_end) =
            (start.saturating_sub(commit), end.saturating_sub(commit));
        piece.clear();
        let sep = if text.len() > MAGIC.len() { "," } else { "" };
        // Writing to a String cannot fail.
        let _ = if relative_start == relative_end {
            write!(piece, "{sep}{relative_start}")
        } else {
            write!(piece, "{sep}{relative_start}-{relative_end}")
        };
        if text.len() + piece.len() > MAX_METADATA {
            return (text, Some(*start));
        }
        text.push_str(&piece);
    }
    (text, None)
}

/// The finished ranges (absolute offsets) in a partition's committed metadata; empty for none,
/// another framework's, or a map that cannot be read (logged).
fn decode(topic: &str, partition: i32, commit: i64, metadata: &str) -> VecDeque<Range> {
    if metadata.is_empty() {
        return VecDeque::new();
    }
    let Some(ranges) = metadata.strip_prefix(MAGIC) else {
        tracing::warn!(%topic, partition, metadata = %metadata.chars().take(64).collect::<String>(), "commit metadata that is not spa-dat's is ignored: records are handled from the committed offset");
        return VecDeque::new();
    };
    let parsed = (metadata.len() <= MAX_READ_METADATA)
        .then(|| parse(commit, ranges))
        .flatten();
    match parsed {
        Some(finished) => finished,
        None => {
            tracing::warn!(%topic, partition, commit, bytes = metadata.len(), "spa-dat commit metadata that cannot be read is ignored: records are handled from the committed offset");
            VecDeque::new()
        }
    }
}

/// `a` or `a-b` ranges, comma-separated, relative to `commit` (1 and up), ascending: exactly
/// what [`encode`] writes. Adjacent ranges are merged.
fn parse(commit: i64, ranges: &str) -> Option<VecDeque<Range>> {
    fn number(text: &str) -> Option<i64> {
        // Digits only: no sign, no '+' (which `parse` takes).
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }
    let mut finished: VecDeque<Range> = VecDeque::new();
    if ranges.is_empty() {
        return Some(finished);
    }
    let mut last_end = 0;
    for range in ranges.split(',') {
        let (start, end) = match range.split_once('-') {
            Some((start, end)) => (number(start)?, number(end)?),
            None => {
                let at = number(range)?;
                (at, at)
            }
        };
        if start <= last_end || end < start {
            return None;
        }
        last_end = end;
        let (start, end) = (commit.checked_add(start)?, commit.checked_add(end)?);
        // One past every range must be an offset too (commits, gauges and merging add 1).
        if end == i64::MAX {
            return None;
        }
        match finished.back_mut() {
            Some(last) if last.1 + 1 == start => last.1 = end,
            _ => finished.push_back((start, end)),
        }
    }
    Some(finished)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    // How the tests look inside (kept apart, so the same tests ran against the per-record
    // window this replaced).

    /// What would be committed for partition 0 now: offset, metadata, cut short.
    fn commit_now(progress: &Progress, topic: &Arc<str>) -> Option<(i64, String, bool)> {
        let partitions = progress.lock();
        partitions.iter().find(|p| p.is(topic, 0))?.to_commit()
    }

    /// The finished ranges above the commit, as held.
    fn ranges_held(progress: &Progress, topic: &Arc<str>) -> Vec<Range> {
        let partitions = progress.lock();
        let Some(entry) = partitions.iter().find(|p| p.is(topic, 0)) else {
            return Vec::new();
        };
        entry
            .commit_offset()
            .map(|commit| entry.finished_ranges(commit))
            .unwrap_or_default()
    }

    /// How many entries partition 0's progress holds.
    fn held_entries(progress: &Progress, topic: &Arc<str>) -> usize {
        let partitions = progress.lock();
        partitions
            .iter()
            .find(|p| p.is(topic, 0))
            .map_or(0, |p| p.pending.len() + p.skip.len())
    }

    fn decode_ranges(commit: i64, metadata: &str) -> Vec<Range> {
        decode("t", 0, commit, metadata).into_iter().collect()
    }

    /// How many entries decoding holds.
    fn decoded_entries(commit: i64, metadata: &str) -> usize {
        decode("t", 0, commit, metadata).len()
    }

    fn encode_ranges(commit: i64, ranges: &[Range]) -> (String, bool) {
        let (metadata, left_out) = encode(commit, ranges);
        (metadata, left_out.is_some())
    }

    fn deliver(progress: &Progress, topic: &Arc<str>, offset: i64) -> Ticket {
        match progress.arrived(topic, 0, offset) {
            Arrival::Deliver(ticket) => ticket,
            Arrival::Skip | Arrival::Unloaded => panic!("{offset} not delivered"),
        }
    }

    #[test]
    fn the_commit_is_the_lowest_unfinished_and_the_finished_above_it_are_the_metadata() {
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None, i64::MAX);
        let tickets: Vec<Ticket> = (0..10)
            .map(|offset| deliver(&progress, &topic, offset))
            .collect();
        for offset in [0, 1, 3, 4, 5, 8] {
            progress.finished(&topic, 0, offset, tickets[offset as usize]);
        }
        assert_eq!(
            commit_now(&progress, &topic),
            Some((2, "spa1:1-3,6".to_owned(), false))
        );
    }

    #[test]
    fn a_restart_skips_what_the_metadata_says_finished_and_ignores_foreign_metadata() {
        assert_eq!(decode_ranges(2, "spa1:1-3,6"), [(3, 5), (8, 8)]);
        assert!(decode_ranges(2, "some-other-framework:{\"x\":1}").is_empty());
        assert!(decode_ranges(2, "spa1:garbage").is_empty());
        assert!(decode_ranges(2, "spa1:5-3").is_empty());
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, Some((2, "spa1:1-3,6")), i64::MAX);
        let delivered: Vec<i64> = (2..10)
            .filter(|offset| matches!(progress.arrived(&topic, 0, *offset), Arrival::Deliver(_)))
            .collect();
        assert_eq!(delivered, [2, 6, 7, 9]);
    }

    #[test]
    fn a_map_too_large_for_kafka_keeps_its_lowest_ranges() {
        let ranges: Vec<Range> = (0..5_000).map(|i| (10 + i * 2, 10 + i * 2)).collect();
        let (metadata, truncated) = encode_ranges(0, &ranges);
        assert!(truncated && metadata.len() <= MAX_METADATA);
        assert!(metadata.starts_with("spa1:10,12,14"));
    }

    #[test]
    fn in_a_transaction_a_record_the_map_could_not_name_waits_until_it_can() {
        // Every other record of 4,000 is stuck behind 0: 2,000 gaps, more than the map names.
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None, i64::MAX);
        let tickets: Vec<Ticket> = (0..4_000)
            .map(|offset| deliver(&progress, &topic, offset))
            .collect();
        let settle = |offset: i64| {
            progress.finish_in_transaction(&[Member {
                topic: &topic,
                partition: 0,
                offset,
                ticket: tickets[offset as usize],
            }])
        };
        let mut deferred = Vec::new();
        for offset in (1..4_000).step_by(2) {
            match settle(offset) {
                Settling::Finished => {}
                Settling::Deferred => deferred.push(offset),
                Settling::Stale { .. } => panic!("{offset} is in flight"),
            }
        }
        assert!(!deferred.is_empty(), "the map outgrew Kafka's metadata");
        let (_, metadata, truncated) = commit_now(&progress, &topic).expect("a commit");
        assert!(
            !truncated,
            "nothing finished beyond what the map names: {}",
            metadata.len()
        );
        // The stuck ones finish too, settled again each round as a transaction's committer
        // does: the commit moves up, the waiting ones fit, and nothing named is ever left out.
        let mut waiting: Vec<i64> = (0..4_000).step_by(2).chain(deferred).collect();
        for _round in 0..100 {
            waiting.retain(|offset| !matches!(settle(*offset), Settling::Finished));
            let (_, metadata, truncated) = commit_now(&progress, &topic).expect("a commit");
            assert!(!truncated, "{}", metadata.len());
            if waiting.is_empty() {
                break;
            }
        }
        assert!(waiting.is_empty(), "{} still waiting", waiting.len());
        assert_eq!(
            commit_now(&progress, &topic),
            Some((4_000, "spa1:".to_owned(), false))
        );
        assert_eq!(settle(5), Settling::Stale { partly: false });
    }

    #[test]
    fn a_group_of_settled_records_counts_whole_or_not_at_all() {
        let progress = Progress::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        progress.load(&a, 0, None, i64::MAX);
        progress.load(&b, 0, None, i64::MAX);
        fn member(topic: &Arc<str>, offset: i64, ticket: Ticket) -> Member<'_> {
            Member {
                topic,
                partition: 0,
                offset,
                ticket,
            }
        }
        let (a, b) = (&a, &b);
        let (a0, b0) = (deliver(&progress, a, 0), deliver(&progress, b, 0));
        // `b` revoked and assigned again: a group holding its old record is stale, partly.
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("b", 0);
        progress.revoke(&revoked);
        progress.load(b, 0, None, i64::MAX);
        let b0_again = deliver(&progress, b, 0);
        assert_eq!(
            progress.finish_in_transaction(&[member(a, 0, a0), member(b, 0, b0)]),
            Settling::Stale { partly: true }
        );
        assert_eq!(
            commit_now(&progress, a).map(|c| c.0),
            Some(0),
            "a/0 still in flight"
        );
        assert_eq!(
            progress.finish_in_transaction(&[member(a, 0, a0), member(b, 0, b0_again)]),
            Settling::Finished
        );
        assert_eq!(commit_now(&progress, a).map(|c| c.0), Some(1));
        assert_eq!(
            progress.finish_in_transaction(&[member(a, 0, a0)]),
            Settling::Stale { partly: false },
            "not in flight any more"
        );
    }

    #[test]
    fn a_record_finished_after_its_partition_was_revoked_does_not_count() {
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None, i64::MAX);
        let old = deliver(&progress, &topic, 5);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("t", 0);
        progress.revoke(&revoked);
        progress.load(&topic, 0, None, i64::MAX);
        deliver(&progress, &topic, 5);
        progress.finished(&topic, 0, 5, old);
        assert_eq!(
            commit_now(&progress, &topic).map(|(offset, _, _)| offset),
            Some(5),
            "still unfinished in the new epoch"
        );
    }

    #[test]
    fn a_range_wider_than_a_million_round_trips() {
        let (metadata, truncated) = encode_ranges(100, &[(101, 1_500_100)]);
        assert_eq!((metadata.as_str(), truncated), ("spa1:1-1500000", false));
        assert_eq!(decode_ranges(100, &metadata), [(101, 1_500_100)]);
        assert_eq!(decoded_entries(100, &metadata), 1, "held as one range");
    }

    #[test]
    fn a_map_claiming_records_past_the_log_end_or_up_to_i64_max_claims_nothing_beyond_it() {
        let topic: Arc<str> = Arc::from("t");
        let progress = Progress::default();
        // Committed at 10 by anyone with access to the group; the log ends at 20.
        progress.load(&topic, 0, Some((10, "spa1:1-9000000000000")), 20);
        let delivered: Vec<i64> = (10..25)
            .filter(|offset| matches!(progress.arrived(&topic, 0, *offset), Arrival::Deliver(_)))
            .collect();
        assert_eq!(
            delivered,
            [10, 20, 21, 22, 23, 24],
            "only 11..=19 could have finished"
        );
        // A range ending at i64::MAX would overflow one past it.
        let max = format!("spa1:1-{}", i64::MAX - 10);
        assert_eq!(decoded_entries(10, &max), 0);
    }

    #[test]
    fn a_log_read_from_below_the_commit_ignores_the_loaded_map() {
        // Committed (100, 101..=105 finished); the topic was recreated: reading starts at 0.
        let topic: Arc<str> = Arc::from("t");
        let progress = Progress::default();
        progress.load(&topic, 0, Some((100, "spa1:1-5")), 200);
        let delivered = (0..=110)
            .filter(|offset| matches!(progress.arrived(&topic, 0, *offset), Arrival::Deliver(_)))
            .count();
        assert_eq!(delivered, 111, "every record of the new log is delivered");
    }

    #[test]
    fn hostile_metadata_is_rejected_or_held_as_ranges() {
        // Two million offsets in two ranges: held as two entries, not two million.
        assert!(decoded_entries(0, "spa1:1-999999,1000001-1999999") <= 2);
        assert!(decoded_entries(7, "spa1:1-9000000000000") <= 1);
        // 4,000 bytes of ranges a million wide each: a few hundred entries.
        let mut wide = String::from(MAGIC);
        let mut start = 1_i64;
        while wide.len() < MAX_METADATA - 40 {
            let _ = write!(
                wide,
                "{}{start}-{}",
                if start > 1 { "," } else { "" },
                start + 999_999
            );
            start += 1_000_001;
        }
        let ranges = decode_ranges(0, &wide);
        assert!(!ranges.is_empty() && ranges.len() < 400, "{}", ranges.len());
        for rejected in [
            "spa1:-5",
            "spa1:1--5",
            "spa1:-5-3",
            "spa1:+5",
            "spa1:0",
            "spa1:0-3",
            "spa1:5,3",
            "spa1:1-5,3-7",
            "spa1:1,,3",
            "spa1:1,",
            "spa1:9223372036854775807",
            "spa1:1-99999999999999999999",
            "spa1:1-9223372036854775807",
        ] {
            assert!(decode_ranges(10, rejected).is_empty(), "{rejected}");
        }
        let too_long = format!("{MAGIC}{}", "1".repeat(MAX_READ_METADATA));
        assert!(decode_ranges(0, &too_long).is_empty());
    }

    #[test]
    fn two_million_finished_behind_one_stuck_record_keep_one_range() {
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None, i64::MAX);
        deliver(&progress, &topic, 0); // stuck
        for offset in 1..=2_000_000 {
            let ticket = deliver(&progress, &topic, offset);
            progress.finished(&topic, 0, offset, ticket);
        }
        assert_eq!(held_entries(&progress, &topic), 1, "only the stuck record");
        assert_eq!(ranges_held(&progress, &topic), [(1, 2_000_000)]);
        assert_eq!(
            commit_now(&progress, &topic),
            Some((0, "spa1:1-2000000".to_owned(), false))
        );
    }

    #[test]
    fn records_read_again_after_a_reset_finish_and_the_commit_moves_past_them() {
        let progress = Progress::default();
        let topic: Arc<str> = Arc::from("t");
        progress.load(&topic, 0, None, i64::MAX);
        let tickets: Vec<Ticket> = (0..20)
            .map(|offset| deliver(&progress, &topic, offset))
            .collect();
        for offset in (0..20).filter(|o| *o != 8) {
            progress.finished(&topic, 0, offset, tickets[offset as usize]);
        }
        // An offset reset: 3 to 5 are read again while 8 is in flight.
        let again: Vec<(i64, Ticket)> = (3..6)
            .map(|offset| (offset, deliver(&progress, &topic, offset)))
            .collect();
        let commit = commit_now(&progress, &topic).map(|(offset, _, _)| offset);
        assert_eq!(commit, Some(3), "never past a record in flight");
        for (offset, ticket) in again {
            progress.finished(&topic, 0, offset, ticket);
        }
        progress.finished(&topic, 0, 8, tickets[8]);
        let commit = commit_now(&progress, &topic).map(|(offset, _, _)| offset);
        assert!(
            commit >= Some(6),
            "nothing in flight: the commit is past every record read, not frozen at {commit:?}"
        );
        // Below the commit: delivered, and the commit goes back to it until it finishes.
        let low = deliver(&progress, &topic, 1);
        assert_eq!(commit_now(&progress, &topic).map(|(o, _, _)| o), Some(1));
        progress.finished(&topic, 0, 1, low);
        assert_eq!(commit_now(&progress, &topic).map(|(o, _, _)| o), Some(2));
    }

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Step {
        /// The next record is read.
        Read,
        /// Offsets are jumped over (markers, compaction), then the next is read.
        Jump(i64),
        /// An offset reset: reading goes back this far and reads.
        Reset(i64),
        /// One record in flight (of any assignment) finishes.
        Finish(usize),
        /// The periodic commit.
        Commit,
        /// The partition is revoked (its commit sent first) and assigned again.
        Revoke,
        /// The process dies: nothing committed since the last commit.
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => Just(Step::Read),
            1 => (1_i64..6).prop_map(Step::Jump),
            1 => (1_i64..30).prop_map(Step::Reset),
            6 => any::<usize>().prop_map(Step::Finish),
            2 => Just(Step::Commit),
            1 => Just(Step::Revoke),
            1 => Just(Step::Restart),
        ]
    }

    struct InFlight {
        offset: i64,
        ticket: Ticket,
        epoch: u64,
        /// Read again since (a reset): its finish says nothing about the offset's record now.
        orphan: bool,
    }

    /// The plain model: sets of offsets, checked against what `Progress` would commit.
    struct World {
        topic: Arc<str>,
        progress: Progress,
        assigned: bool,
        epoch: u64,
        read_in_epoch: bool,
        /// The next offset the consumer reads.
        position: i64,
        /// One past the highest read in this assignment since the last reset.
        high: Option<i64>,
        broker: Option<(i64, String)>,
        loaded_ranges: usize,
        in_flight: Vec<InFlight>,
        /// Handled at least once (since its offset was last read again after a reset).
        handled: BTreeSet<i64>,
        /// Jumped over: no record.
        absent: BTreeSet<i64>,
        /// Finished, as this assignment knows (its own finishes and the loaded metadata).
        known_done: BTreeSet<i64>,
    }

    impl World {
        fn new() -> Self {
            World {
                topic: Arc::from("t"),
                progress: Progress::default(),
                assigned: false,
                epoch: 0,
                read_in_epoch: false,
                position: 0,
                high: None,
                broker: None,
                loaded_ranges: 0,
                in_flight: Vec::new(),
                handled: BTreeSet::new(),
                absent: BTreeSet::new(),
                known_done: BTreeSet::new(),
            }
        }

        fn assign(&mut self) {
            if self.assigned {
                return;
            }
            let committed = self.broker.as_ref().map(|(o, m)| (*o, m.as_str()));
            self.progress.load(&self.topic, 0, committed, i64::MAX);
            self.epoch += 1;
            self.assigned = true;
            self.read_in_epoch = false;
            self.high = None;
            self.position = self.broker.as_ref().map_or(0, |(o, _)| *o);
            let ranges = self
                .broker
                .as_ref()
                .map(|(o, m)| decode_ranges(*o, m))
                .unwrap_or_default();
            self.loaded_ranges = ranges.len();
            self.known_done = ranges.iter().flat_map(|(s, e)| *s..=*e).collect();
            // What a commit said was done is done: it was checked when it was made (a reset
            // seen after it died with the process).
            self.handled.extend(0..self.position);
            self.handled.extend(self.known_done.iter().copied());
        }

        fn read(&mut self, offset: i64) {
            self.assign();
            self.absent.remove(&offset);
            let backward = self.high.is_some_and(|high| offset < high);
            if backward {
                // Read again: from here on the offsets may hold other records.
                self.handled.retain(|o| *o < offset);
                self.absent.retain(|o| *o < offset);
                self.known_done.retain(|o| *o < offset);
                for flight in self.in_flight.iter_mut().filter(|f| f.offset >= offset) {
                    flight.orphan = true;
                }
                self.high = Some(offset + 1);
            } else {
                self.high = Some(offset + 1);
            }
            self.position = offset + 1;
            self.read_in_epoch = true;
            match self.progress.arrived(&self.topic, 0, offset) {
                Arrival::Deliver(ticket) => self.in_flight.push(InFlight {
                    offset,
                    ticket,
                    epoch: self.epoch,
                    orphan: false,
                }),
                Arrival::Skip => assert!(
                    self.handled.contains(&offset) && !backward,
                    "skipped {offset}, which was not handled"
                ),
                Arrival::Unloaded => panic!("loaded"),
            }
        }

        /// Reads the next record there is.
        fn read_on(&mut self) {
            self.assign();
            let mut offset = self.position;
            while self.absent.contains(&offset) {
                offset += 1;
            }
            self.read(offset);
        }

        fn finish(&mut self, pick: usize) {
            if self.in_flight.is_empty() {
                return;
            }
            let flight = self.in_flight.swap_remove(pick % self.in_flight.len());
            self.progress
                .finished(&self.topic, 0, flight.offset, flight.ticket);
            if !flight.orphan {
                self.handled.insert(flight.offset);
                if self.assigned && flight.epoch == self.epoch {
                    self.known_done.insert(flight.offset);
                }
            }
        }

        fn commit(&mut self) {
            if !self.assigned || !self.read_in_epoch {
                return;
            }
            let (commit, metadata, truncated) =
                commit_now(&self.progress, &self.topic).expect("something was read");
            let decoded = decode_ranges(commit, &metadata);
            let held = ranges_held(&self.progress, &self.topic);
            let claims = |o: i64| decoded.iter().any(|(s, e)| *s <= o && o <= *e);
            // The metadata is what is held, or its beginning when cut short.
            if truncated {
                assert!(
                    held.starts_with(&decoded),
                    "{decoded:?} not a prefix of {held:?}"
                );
            } else {
                assert_eq!(decoded, held, "decode(encode(map)) is the map");
            }
            let current: Vec<&InFlight> = self
                .in_flight
                .iter()
                .filter(|f| f.epoch == self.epoch)
                .collect();
            for flight in &current {
                assert!(
                    flight.offset >= commit && !claims(flight.offset),
                    "commit {commit} {metadata} passes {} in flight",
                    flight.offset
                );
            }
            let true_done = |o: i64| self.handled.contains(&o) || self.absent.contains(&o);
            for o in (0..commit).chain(decoded.iter().flat_map(|(s, e)| *s..=*e)) {
                assert!(true_done(o), "commit {commit} {metadata} claims {o}");
            }
            if !truncated {
                for o in self.known_done.range(commit..) {
                    if !current.iter().any(|f| f.offset == *o) {
                        assert!(claims(*o), "commit {commit} {metadata} lost finished {o}");
                    }
                }
            }
            if current.is_empty() {
                assert!(
                    commit >= self.position,
                    "nothing in flight, yet the commit {commit} stays below {}",
                    self.position
                );
            }
            let distinct: BTreeSet<i64> = current.iter().map(|f| f.offset).collect();
            assert!(
                held_entries(&self.progress, &self.topic) <= current.len() + self.loaded_ranges,
                "held more than what is in flight"
            );
            assert!(held.len() <= distinct.len() + 1 + self.loaded_ranges);
            self.broker = Some((commit, metadata));
        }

        fn apply(&mut self, step: Step) {
            match step {
                Step::Read => self.read_on(),
                Step::Jump(by) => {
                    self.assign();
                    self.absent.extend(self.position..self.position + by);
                    self.read_on();
                }
                Step::Reset(back) => {
                    self.assign();
                    // A reset is seen when a record below the highest read arrives.
                    if self.high.is_some() {
                        self.read((self.position - back).max(0));
                    } else {
                        self.read_on();
                    }
                }
                Step::Finish(pick) => self.finish(pick),
                Step::Commit => self.commit(),
                Step::Revoke => {
                    if self.assigned {
                        self.commit();
                        let mut revoked = TopicPartitionList::new();
                        revoked.add_partition(&self.topic, 0);
                        self.progress.revoke(&revoked);
                        self.assigned = false;
                    }
                }
                Step::Restart => {
                    self.progress = Progress::default();
                    self.in_flight.clear();
                    self.assigned = false;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Against a model of sets: the commit never passes a record in flight nor claims one
        /// not handled; nothing finished is lost across encode, decode and a restart; a
        /// commit is not frozen when nothing is in flight; what is held grows with what is in
        /// flight, not with what finished.
        #[test]
        fn progress_matches_a_model_of_sets(steps in proptest::collection::vec(step(), 1..300)) {
            let mut world = World::new();
            for step in steps {
                world.apply(step);
            }
            world.apply(Step::Commit);
        }

        /// Any map the encoder writes decodes to the ranges it was given (a prefix of them
        /// when cut short), held as ranges.
        #[test]
        fn decode_reads_every_map_encode_writes(
            commit in 0_i64..1_000_000_000_000,
            shape in proptest::collection::vec((2_i64..1_000_000, 0_i64..3_000_000), 0..400),
        ) {
            let mut ranges = Vec::new();
            let mut at = commit;
            for (gap, width) in shape {
                let start = at + gap;
                ranges.push((start, start + width));
                at = start + width;
            }
            let (metadata, truncated) = encode_ranges(commit, &ranges);
            prop_assert!(metadata.len() <= MAX_METADATA);
            let decoded = decode_ranges(commit, &metadata);
            if truncated {
                prop_assert!(ranges.starts_with(&decoded) && decoded.len() < ranges.len());
            } else {
                prop_assert_eq!(&decoded, &ranges);
            }
            prop_assert_eq!(decoded_entries(commit, &metadata), decoded.len());
        }
    }
}
