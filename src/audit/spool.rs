//! Records spooled to anonymous temporary files, so that memory does not grow with the number of
//! findings. Files are partitioned by namespace range (the sorted namespace names known when the
//! audit starts): reading the partitions in order and sorting each one gives every record sorted
//! by namespace, while only one partition is ever in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

use crate::audit::record::ObjectRecord;

/// At most this many partition files.
pub const MAX_PARTITIONS: usize = 64;

pub struct Spool {
    /// Sorted namespace names that split the partitions.
    namespaces: Vec<String>,
    parts: Vec<Option<BufWriter<File>>>,
    counts: Vec<u64>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("namespaces", &self.namespaces.len())
            .field("records", &self.len())
            .finish()
    }
}

impl Spool {
    /// A spool partitioned over these namespaces ("" for cluster scope sorts first).
    pub fn new(mut namespaces: Vec<String>) -> Spool {
        namespaces.sort();
        namespaces.dedup();
        let partitions = (namespaces.len() + 1).clamp(1, MAX_PARTITIONS);
        Spool {
            namespaces,
            parts: (0..partitions).map(|_| None).collect(),
            counts: vec![0; partitions],
        }
    }

    /// The namespaces the spool was partitioned over (sorted).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    fn partition(&self, namespace: &str) -> usize {
        let rank = self.namespaces.partition_point(|n| n.as_str() < namespace);
        // Ranks run 0..=len; spread them evenly and in order over the partitions.
        let p = rank * self.parts.len() / (self.namespaces.len() + 1);
        p.min(self.parts.len() - 1)
    }

    pub fn push(&mut self, record: &ObjectRecord) -> io::Result<()> {
        let p = self.partition(record.namespace_key());
        if self.parts[p].is_none() {
            self.parts[p] = Some(BufWriter::with_capacity(16 * 1024, tempfile::tempfile()?));
        }
        if let Some(w) = self.parts[p].as_mut() {
            serde_json::to_writer(&mut *w, record).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
        }
        self.counts[p] += 1;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// The records of one partition, sorted by namespace, kind, name, file and line.
    pub fn read_partition(&mut self, p: usize) -> io::Result<Vec<ObjectRecord>> {
        let Some(Some(writer)) = self.parts.get_mut(p) else {
            return Ok(Vec::new());
        };
        writer.flush()?;
        let mut file = writer.get_ref().try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        let mut out = Vec::with_capacity(usize::try_from(self.counts[p]).unwrap_or(0));
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            out.push(serde_json::from_str::<ObjectRecord>(&line).map_err(io::Error::other)?);
        }
        // Appends go to the end whatever the shared cursor says: put it back.
        writer.get_mut().seek(SeekFrom::End(0))?;
        out.sort_by(|a, b| {
            (a.namespace_key(), &a.kind, &a.name, &a.file, a.line).cmp(&(
                b.namespace_key(),
                &b.kind,
                &b.name,
                &b.file,
                b.line,
            ))
        });
        Ok(out)
    }

    /// Calls `f` with each partition's records in order: all records, sorted, one partition in
    /// memory at a time.
    pub fn for_each_partition<E: From<io::Error>>(
        &mut self,
        mut f: impl FnMut(Vec<ObjectRecord>) -> Result<(), E>,
    ) -> Result<(), E> {
        for p in 0..self.parts.len() {
            let records = self.read_partition(p)?;
            if !records.is_empty() {
                f(records)?;
            }
        }
        Ok(())
    }
}

/// Splits sorted records into (namespace, records) runs.
pub fn by_namespace(records: Vec<ObjectRecord>) -> Vec<(String, Vec<ObjectRecord>)> {
    let mut out: Vec<(String, Vec<ObjectRecord>)> = Vec::new();
    for r in records {
        let ns = r.namespace_key().to_string();
        match out.last_mut() {
            Some((last, group)) if *last == ns => group.push(r),
            _ => out.push((ns, vec![r])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    fn record(ns: Option<&str>, name: &str) -> ObjectRecord {
        ObjectRecord {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
            uid: None,
            file: None,
            line: None,
            environment: Environment::Production,
            evaluated: vec![],
            skipped: None,
            findings: vec![],
        }
    }

    #[test]
    fn partitions_come_back_sorted_by_namespace() -> io::Result<()> {
        let namespaces: Vec<String> = (0..200).map(|i| format!("ns-{i:03}")).collect();
        let mut spool = Spool::new(namespaces.clone());
        assert_eq!(spool.partitions(), MAX_PARTITIONS);
        for ns in namespaces.iter().rev() {
            spool.push(&record(Some(ns), "b"))?;
            spool.push(&record(Some(ns), "a"))?;
        }
        spool.push(&record(None, "node"))?;
        spool.push(&record(Some("zz-unknown"), "x"))?;
        let mut seen = Vec::new();
        spool.for_each_partition::<io::Error>(|records| {
            seen.extend(
                records
                    .into_iter()
                    .map(|r| (r.namespace_key().to_string(), r.name)),
            );
            Ok(())
        })?;
        assert_eq!(seen.len(), 402);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert_eq!(seen[0].0, "");
        // Readable twice, and writable after reading.
        spool.push(&record(Some("ns-000"), "c"))?;
        assert_eq!(spool.len(), 403);
        let first = spool.read_partition(0)?;
        assert!(first.iter().any(|r| r.name == "c"));
        Ok(())
    }
}
