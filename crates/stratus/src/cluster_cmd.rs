//! `stratus cluster status`: a control-plane replica's view of its cluster
//! (`GET /v1/cluster`).

use anyhow::{bail, Context, Result};
use stratus_gateway::client::GatewayClient;
use stratus_gateway::cluster_view::ClusterStatus;
use stratus_report::table;

/// Prints the replica's role, the leader and one row per worker.
pub async fn status(client: &GatewayClient) -> Result<()> {
    let r = client.get("/v1/cluster").await?;
    if r.status != 200 {
        bail!("{}", r.error_message());
    }
    let s: ClusterStatus =
        serde_json::from_slice(&r.body).context("reading the gateway's /v1/cluster answer")?;
    print!("{}", describe(&s));
    Ok(())
}

fn describe(s: &ClusterStatus) -> String {
    let mut out = format!(
        "replica {} is the {}{}; placement {}; {} worker(s)\n",
        s.replica,
        s.role,
        match &s.leader {
            Some(l) => format!(" (the leader is {l})"),
            None if s.role == "standby" => " (no leader elected yet)".into(),
            None => String::new(),
        },
        s.placement,
        s.nodes.len()
    );
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.agent_url.clone(),
                n.cores.to_string(),
                format!("{} MiB", n.memory_bytes >> 20),
                n.instances.to_string(),
                n.images.to_string(),
                n.snapshots.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "worker",
                "agent",
                "cores",
                "memory",
                "instances",
                "images",
                "snapshots",
            ],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_gateway::cluster_view::ClusterNode;

    #[test]
    fn a_standby_names_its_leader_and_lists_workers() {
        let s = ClusterStatus {
            replica: "r1".into(),
            role: "standby".into(),
            leader: Some("10.0.0.1:8080".into()),
            placement: "spread".into(),
            nodes: vec![ClusterNode {
                name: "h1".into(),
                agent_url: "http://10.77.0.2:8081".into(),
                cores: 2,
                memory_bytes: 4 << 30,
                instances: 3,
                images: 1,
                snapshots: 0,
            }],
        };
        let text = describe(&s);
        assert!(
            text.starts_with("replica r1 is the standby (the leader is 10.0.0.1:8080)"),
            "{text}"
        );
        assert!(text.contains("h1") && text.contains("4096 MiB"), "{text}");
        let none = ClusterStatus {
            leader: None,
            nodes: vec![],
            ..s
        };
        assert!(describe(&none).contains("no leader elected yet"));
    }
}
