//! The `external` runtime: a function that runs elsewhere (a Knative
//! Service on a Kubernetes cluster, any HTTP endpoint), named by its URL in
//! the `stratus.dev/url` annotation (the spec crate checks it at deploy).
//! Starting an "instance" starts nothing: it is a slot the activator counts,
//! so `containerConcurrency` (and `max-scale`) still bound the calls in
//! flight to it; calls go to the URL, with its host as the `Host` header
//! (how a Knative ingress routes them).

use std::net::SocketAddr;

use async_trait::async_trait;

use crate::{Instance, InstanceSpec, Route, Sandbox, SandboxError, StartTiming};

/// The annotation holding the URL (`stratus_spec::external::URL_ANNOTATION`).
pub const URL_ANNOTATION: &str = "stratus.dev/url";

/// Calls functions at their URL; starts nothing.
pub struct ExternalSandbox;

/// One slot of an external function.
pub struct ExternalInstance {
    id: String,
    route: Route,
    endpoint: SocketAddr,
}

#[async_trait]
impl Sandbox for ExternalSandbox {
    fn kind(&self) -> &'static str {
        "external"
    }

    fn on_this_host(&self) -> bool {
        false
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Box<dyn Instance>, StartTiming), SandboxError> {
        let url = spec
            .annotations
            .get(URL_ANNOTATION)
            .map(|u| u.trim().to_string())
            .ok_or_else(|| SandboxError::Spawn {
                function: spec.function.clone(),
                instance: spec.instance_id.clone(),
                program: "an external function".into(),
                reason: format!("no '{URL_ANNOTATION}' annotation names its URL"),
            })?;
        // Where it is, when the URL names an address (for listings only).
        let endpoint = url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
            .and_then(|authority| authority.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let inst = ExternalInstance {
            id: spec.instance_id.clone(),
            route: Route {
                url,
                authorization: None,
                host: None,
            },
            endpoint,
        };
        Ok((Box::new(inst), StartTiming::default()))
    }
}

#[async_trait]
impl Instance for ExternalInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    fn route(&self) -> Route {
        self.route.clone()
    }

    fn exit_status(&self) -> Option<String> {
        None
    }

    async fn stop(&self) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::LogBuffer;

    fn spec(url: Option<&str>) -> InstanceSpec {
        InstanceSpec {
            resources: Default::default(),
            function: "f".into(),
            revision: 1,
            instance_id: "f-r1-0".into(),
            image: "i".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            container_port: 8080,
            startup_timeout: Duration::from_secs(1),
            logs: Arc::new(LogBuffer::new(10)),
            annotations: url
                .map(|u| [(URL_ANNOTATION.to_string(), u.to_string())].into())
                .unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn a_slot_routes_to_the_url_and_starts_nothing() {
        let (i, t) = ExternalSandbox
            .start(&spec(Some("http://10.1.2.3:8080/run")))
            .await
            .unwrap();
        assert_eq!(i.route().url, "http://10.1.2.3:8080/run");
        assert_eq!(i.route().authorization, None);
        assert_eq!(i.endpoint(), "10.1.2.3:8080".parse().unwrap());
        assert_eq!(t, StartTiming::default());
        assert_eq!(i.exit_status(), None);
        i.stop().await;
        let (i, _) = ExternalSandbox
            .start(&spec(Some("http://hello.default.svc.cluster.local")))
            .await
            .unwrap();
        assert_eq!(i.endpoint().port(), 0);
    }

    #[tokio::test]
    async fn without_a_url_the_start_says_so() {
        let e = ExternalSandbox.start(&spec(None)).await.err().unwrap();
        assert!(
            e.to_string().contains("no 'stratus.dev/url' annotation"),
            "{e}"
        );
    }
}
