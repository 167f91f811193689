//! `stratus export knative`: the Services deployed on a gateway (or those in
//! local spec files) as Knative `serving.knative.dev/v1` YAML, ready for
//! `kubectl apply -f` on a Knative cluster. Workflows have no Knative
//! equivalent and are left out (said on stderr).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stratus_gateway::client::GatewayClient;
use stratus_spec::Service;

/// Writes the export to `out` (stdout when `None`); warnings go to stderr.
pub async fn knative(client: &GatewayClient, files: &[PathBuf], out: Option<&Path>) -> Result<()> {
    let (services, skipped) = if files.is_empty() {
        deployed(client).await?
    } else {
        from_files(files)?
    };
    if skipped > 0 {
        eprintln!("{skipped} workflow(s) left out: Knative Serving has no workflows");
    }
    let e = stratus_spec::export_knative(&services);
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    match out {
        None => print!("{}", e.yaml),
        Some(p) => {
            // Whole or nothing: a temporary file renamed into place.
            let tmp = p.with_extension("tmp-export");
            std::fs::write(&tmp, &e.yaml).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {} Service(s) to {}", services.len(), p.display());
        }
    }
    Ok(())
}

/// Every deployed Service, read back from the source it was deployed with.
async fn deployed(client: &GatewayClient) -> Result<(Vec<Service>, usize)> {
    let r = client.get("/v1/resources").await?;
    if r.status != 200 {
        bail!("{}", r.error_message());
    }
    let items: Vec<stratus_gateway::ResourceInfo> =
        serde_json::from_slice(&r.body).context("bad list reply")?;
    let mut services = Vec::new();
    let mut skipped = 0;
    for i in items {
        if i.kind != "Service" {
            skipped += 1;
            continue;
        }
        if let Some(why) = &i.unavailable {
            eprintln!(
                "note: {} is unavailable here ({why}); exported as deployed",
                i.name
            );
        }
        let r = client.get(&format!("/v1/resources/{}", i.name)).await?;
        if r.status != 200 {
            bail!("reading {}: {}", i.name, r.error_message());
        }
        let file = format!("{} (deployed)", i.name);
        let bundle = stratus_spec::parse(&file, &r.text()).map_err(|e| {
            anyhow::anyhow!("the deployed source of {} does not parse:\n{e}", i.name)
        })?;
        match bundle.services.into_iter().find(|s| s.name == i.name) {
            Some(s) => services.push(s),
            None => bail!(
                "the deployed source of {} holds no Service of that name",
                i.name
            ),
        }
    }
    Ok((services, skipped))
}

fn from_files(paths: &[PathBuf]) -> Result<(Vec<Service>, usize)> {
    let files = stratus_embedded::yaml_files(paths)?;
    if files.is_empty() {
        bail!("no .yaml or .yml files found in the paths given");
    }
    let mut services = Vec::new();
    let mut skipped = 0;
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let b = stratus_spec::parse(&f.display().to_string(), &text)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        skipped += b.workflows.len();
        services.extend(b.services);
    }
    Ok((services, skipped))
}
