//! The files a sync is working on, indexed by what the plan asks about on
//! every event: which are ready to fetch, which are staged, how many are
//! on their way or uncommitted, which have a deadline. The plan used to
//! walk every file (up to [`super::MAX_UNCOMMITTED`] and more) three times
//! per event; on 1,000 small files that walk was ~6% of the whole sync's
//! CPU, on the thread every event passes through.
//!
//! A file's stage changes only through [`InProgress::update`], which
//! re-files it, so the indexes cannot drift from the stages.

use std::collections::{BTreeMap, BTreeSet};

use super::files::{File, Install, Stage};
use super::FileId;

/// Files being worked on, by id, with indexes by stage.
#[derive(Debug, Default)]
pub struct InProgress {
    files: BTreeMap<FileId, File>,
    /// [`Stage::Ready`]: waiting for room in the request window.
    ready: BTreeSet<FileId>,
    /// [`Install::Staged`]: waiting for a commit.
    staged: BTreeSet<FileId>,
    /// [`Stage::Fetching`] and [`Stage::Waiting`]: they have a deadline.
    timed: BTreeSet<FileId>,
    /// [`Install::Committing`] files.
    committing: usize,
    /// Files that may still join a batch: inspected, ready, fetching or
    /// being staged.
    on_the_way: usize,
}

/// Which index a stage belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Index {
    Ready,
    Staged,
    Timed,
    Committing,
}

/// The indexes of `stage`, and whether it is on its way to a batch.
fn indexes(stage: &Stage) -> (Option<Index>, bool) {
    match stage {
        Stage::Inspecting => (None, true),
        Stage::Ready { .. } => (Some(Index::Ready), true),
        Stage::Fetching { .. } => (Some(Index::Timed), true),
        Stage::Waiting { .. } => (Some(Index::Timed), false),
        Stage::Installing { step, .. } => match step {
            Install::Alone => (None, false),
            Install::Staging => (None, true),
            Install::Staged => (Some(Index::Staged), false),
            Install::Committing => (Some(Index::Committing), false),
        },
    }
}

impl InProgress {
    /// Files being worked on.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is being worked on.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file `id`.
    pub fn get(&self, id: &FileId) -> Option<&File> {
        self.files.get(id)
    }

    /// Adds `file` (replacing any file of the same id).
    pub fn insert(&mut self, id: FileId, file: File) {
        self.remove(&id);
        self.file(id, &file.stage, true);
        self.files.insert(id, file);
    }

    /// Takes the file `id` out.
    pub fn remove(&mut self, id: &FileId) -> Option<File> {
        let file = self.files.remove(id)?;
        self.file(*id, &file.stage, false);
        Some(file)
    }

    /// Changes the file `id` with `change`, re-filing it by its new stage.
    pub fn update<R>(&mut self, id: FileId, change: impl FnOnce(&mut File) -> R) -> Option<R> {
        let file = self.files.get_mut(&id)?;
        let before = file.stage.clone();
        let r = change(file);
        let after = file.stage.clone();
        if indexes(&before) != indexes(&after) {
            self.file(id, &before, false);
            self.file(id, &after, true);
        }
        Some(r)
    }

    /// Every file, by id (the indexes dropped).
    pub fn into_files(self) -> BTreeMap<FileId, File> {
        self.files
    }

    /// The ready file with the lowest id (the oldest listed).
    pub fn first_ready(&self) -> Option<FileId> {
        self.ready.first().copied()
    }

    /// Staged files, lowest ids first.
    pub fn staged(&self) -> impl Iterator<Item = FileId> + '_ {
        self.staged.iter().copied()
    }

    /// How many files are staged.
    pub fn staged_count(&self) -> usize {
        self.staged.len()
    }

    /// Files staged or in a running commit.
    pub fn uncommitted(&self) -> usize {
        self.staged.len() + self.committing
    }

    /// Files that may still join a batch (see [`super::files::commit_now`]).
    pub fn on_the_way(&self) -> usize {
        self.on_the_way
    }

    /// Files fetching or waiting to ask again: those with a deadline.
    pub fn timed(&self) -> impl Iterator<Item = (FileId, &File)> + '_ {
        self.timed
            .iter()
            .filter_map(|id| self.files.get(id).map(|f| (*id, f)))
    }

    /// Adds (`add`) or removes the file `id` at `stage` to or from its
    /// indexes.
    fn file(&mut self, id: FileId, stage: &Stage, add: bool) {
        let (index, on_the_way) = indexes(stage);
        let count = |n: usize| if add { n + 1 } else { n.saturating_sub(1) };
        if on_the_way {
            self.on_the_way = count(self.on_the_way);
        }
        let set = match index {
            None => return,
            Some(Index::Committing) => {
                self.committing = count(self.committing);
                return;
            }
            Some(Index::Ready) => &mut self.ready,
            Some(Index::Staged) => &mut self.staged,
            Some(Index::Timed) => &mut self.timed,
        };
        if add {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Time;

    fn file(stage: Stage) -> File {
        File {
            name: "a.pgp".into(),
            entry: super::super::Entry {
                name: Some("a.pgp".into()),
                path: "/a.pgp".into(),
                size: 1,
                sum: "ab".repeat(32),
            },
            stage,
            retries: 0,
            restarted: false,
        }
    }

    /// The indexes agree with a walk over every file after any change.
    fn agrees(t: &InProgress) {
        let walk = |f: &dyn Fn(&Stage) -> bool| -> Vec<FileId> {
            t.files
                .iter()
                .filter(|(_, x)| f(&x.stage))
                .map(|(id, _)| *id)
                .collect()
        };
        let ready = walk(&|s| matches!(s, Stage::Ready { .. }));
        assert_eq!(t.ready.iter().copied().collect::<Vec<_>>(), ready);
        let staged = walk(&|s| {
            matches!(
                s,
                Stage::Installing {
                    step: Install::Staged,
                    ..
                }
            )
        });
        assert_eq!(t.staged().collect::<Vec<_>>(), staged);
        let timed = walk(&|s| matches!(s, Stage::Fetching { .. } | Stage::Waiting { .. }));
        assert_eq!(t.timed().map(|(id, _)| id).collect::<Vec<_>>(), timed);
        let committing = walk(&|s| {
            matches!(
                s,
                Stage::Installing {
                    step: Install::Committing,
                    ..
                }
            )
        });
        assert_eq!(t.uncommitted(), staged.len() + committing.len());
        let on_the_way = walk(&|s| {
            matches!(
                s,
                Stage::Inspecting
                    | Stage::Ready { .. }
                    | Stage::Fetching { .. }
                    | Stage::Installing {
                        step: Install::Staging,
                        ..
                    }
            )
        });
        assert_eq!(t.on_the_way(), on_the_way.len());
    }

    #[test]
    fn indexes_follow_every_change() {
        let installing = |step| Stage::Installing {
            got: 1,
            resumed: false,
            step,
        };
        let stages = [
            Stage::Inspecting,
            Stage::Ready { from: 0 },
            Stage::Fetching {
                from: 0,
                started: Time::ZERO,
                got: 0,
            },
            Stage::Waiting {
                from: 0,
                until: Time::ZERO,
            },
            installing(Install::Alone),
            installing(Install::Staging),
            installing(Install::Staged),
            installing(Install::Committing),
        ];
        let mut t = InProgress::default();
        // Every stage to every stage, with other files around.
        for (i, a) in stages.iter().enumerate() {
            t.insert(FileId(100 + i as u64), file(a.clone()));
        }
        for (i, a) in stages.iter().enumerate() {
            for b in &stages {
                let id = FileId(i as u64);
                t.insert(id, file(a.clone()));
                agrees(&t);
                t.update(id, |f| f.stage = b.clone());
                agrees(&t);
                // Same id inserted again: replaced, not counted twice.
                t.insert(id, file(b.clone()));
                agrees(&t);
                t.remove(&id);
                agrees(&t);
            }
        }
        assert_eq!(t.len(), stages.len());
        let ready = stages
            .iter()
            .position(|s| matches!(s, Stage::Ready { .. }))
            .map(|i| FileId(100 + i as u64));
        assert_eq!(t.first_ready(), ready, "the one ready file left");
        assert!(t.update(FileId(7), |_| ()).is_none(), "unknown file");
    }
}
