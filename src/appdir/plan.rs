//! The tree of names an upload makes under `/app`, checked before anything is created: what
//! [`crate::appdir::unzip`] builds from an archive, extracts into staging, and what
//! [`crate::appdir::place`] and [`crate::appdir::journal`] move into `/app` and undo.

use std::collections::HashMap;

/// One file entry of the archive, checked.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) index: usize,
    /// Its node in [`Plan::nodes`].
    pub(crate) node: usize,
    pub(crate) compressed: u64,
}

/// What a name of the planned tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    File,
    Dir,
}

/// One name of the tree the archive makes under `/app`. The tree is kept as a trie (each node
/// holds its own name only, its children by name), so a plan costs memory and time linear in
/// the names' length whatever their depth: keying a map by every ancestor's full path costs
/// the square of the depth per entry.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) parent: usize,
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    /// Permission bits to apply (setuid/setgid dropped), when the archive has them.
    pub(crate) mode: Option<u32>,
    pub(crate) children: HashMap<String, usize>,
}

/// The checked archive: its file entries, and the tree they make. A node's parent always
/// comes before it in `nodes`; `nodes[0]` is `/app` itself.
#[derive(Debug)]
pub struct Plan {
    pub(crate) entries: Vec<Planned>,
    pub(crate) nodes: Vec<Node>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            nodes: vec![Node {
                parent: 0,
                name: String::new(),
                kind: NodeKind::Dir,
                mode: None,
                children: HashMap::new(),
            }],
        }
    }
}

impl Plan {
    /// The path of `node` relative to `/app` (`a/b/c`; empty for the root).
    pub(crate) fn path(&self, mut node: usize) -> String {
        let mut names = Vec::new();
        while node != 0 {
            names.push(self.nodes[node].name.as_str());
            node = self.nodes[node].parent;
        }
        names.reverse();
        names.join("/")
    }

    /// The child `name` of `parent`, made (as a directory without a mode) if it is new.
    pub(crate) fn child(&mut self, parent: usize, name: &str) -> (usize, bool) {
        if let Some(&id) = self.nodes[parent].children.get(name) {
            return (id, false);
        }
        let id = self.nodes.len();
        self.nodes.push(Node {
            parent,
            name: name.to_owned(),
            kind: NodeKind::Dir,
            mode: None,
            children: HashMap::new(),
        });
        self.nodes[parent].children.insert(name.to_owned(), id);
        (id, true)
    }

    /// The node at `path` (components relative to `/app`), if planned.
    #[cfg(test)]
    pub(crate) fn find(&self, path: &[&str]) -> Option<usize> {
        let mut node = 0;
        for name in path {
            node = *self.nodes[node].children.get(*name)?;
        }
        Some(node)
    }
}
