//! Ordering actions by their dependencies (petgraph). Pure.

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::DiGraph;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the plan's actions depend on each other in a circle: {}", .members.join(" -> "))]
pub struct Cycle {
    /// The members in dependency order, the first repeated at the end.
    pub members: Vec<String>,
}

/// Orders ids so that each comes after everything it depends on; ties keep input order.
/// Unknown dependencies are ignored. A cycle is an error naming its members.
pub fn order(ids: &[String], depends_on: &[Vec<String>]) -> Result<Vec<usize>, Cycle> {
    let mut g = DiGraph::<usize, ()>::with_capacity(ids.len(), ids.len());
    let nodes: Vec<_> = (0..ids.len()).map(|i| g.add_node(i)).collect();
    let index: BTreeMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    for (i, deps) in depends_on.iter().enumerate() {
        for d in deps {
            if let Some(&j) = index.get(d.as_str()) {
                g.add_edge(nodes[j], nodes[i], ());
            }
        }
    }
    match toposort(&g, None) {
        Ok(_) => {}
        Err(_) => {
            let scc = tarjan_scc(&g).into_iter().find(|c| c.len() > 1 || g.contains_edge(c[0], c[0])).unwrap_or_default();
            // Walk the circle from its smallest member so the message is stable.
            let inside: std::collections::BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
            let start = *inside.iter().next().unwrap_or(&0);
            let mut members = vec![ids[start].clone()];
            let mut cur = start;
            loop {
                let next = g
                    .neighbors(nodes[cur])
                    .map(|n| g[n])
                    .filter(|n| inside.contains(n))
                    .min()
                    .unwrap_or(start);
                members.push(ids[next].clone());
                if next == start || members.len() > inside.len() + 1 {
                    break;
                }
                cur = next;
            }
            return Err(Cycle { members });
        }
    }
    // Stable order: repeatedly take the earliest id whose dependencies are done (Kahn's, by index).
    let mut indegree: Vec<usize> = vec![0; ids.len()];
    for e in g.edge_indices() {
        let (_, b) = g.edge_endpoints(e).unwrap();
        indegree[g[b]] += 1;
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..ids.len()).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::with_capacity(ids.len());
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for n in g.neighbors(nodes[i]) {
            let j = g[n];
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let ids = s(&["reload", "edit-a", "edit-b"]);
        let deps = vec![s(&["edit-a", "edit-b"]), vec![], vec![]];
        assert_eq!(order(&ids, &deps).unwrap(), vec![1, 2, 0]);
    }

    #[test]
    fn a_cycle_names_its_members_in_order() {
        let ids = s(&["a", "b", "c", "d"]);
        let deps = vec![s(&["c"]), s(&["a"]), s(&["b"]), vec![]];
        let err = order(&ids, &deps).unwrap_err();
        assert_eq!(err.members, s(&["a", "b", "c", "a"]));
        assert_eq!(err.to_string(), "the plan's actions depend on each other in a circle: a -> b -> c -> a");
    }
}
