//! One run's call to a function instance: [`Platform::call`] tries it on
//! another instance when the connection to its instance's host breaks;
//! `call_once` acquires a slot, builds the request (by reference, with
//! items kept on workers, or as a body), sends it and collects the answer
//! within the function's timeout.

use super::*;

/// How many other instances a run is tried on when the connection to its
/// instance's host breaks before an answer (a worker killed or cut off):
/// the function sees the same idempotency key each time. Independent of a
/// step's `retry:` policy, which covers the function's own failures.
const HOST_LOSS_RETRIES: u32 = 2;

impl Platform {
    /// Calls one function once: acquire a slot (buffering while instances
    /// start), send the request, collect the response, all within the
    /// function's timeout.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call(
        self: &Arc<Self>,
        pool: Arc<FunctionPool>,
        d: Dispatch,
        t0: Instant,
        ctx: crate::retry::CallCtx,
        sess: Option<Arc<stratus_nodestore::Session>>,
        mut near: Option<Arc<str>>,
        data: KeepData,
        (mut chain, mut map): (Option<chain::Chain>, Option<mapped::MapPlan>),
    ) -> RunOutcome {
        if !ctx.wait_until(t0, d.not_before_us).await {
            return RunOutcome::refused(d.run, micros(t0), CallError::Abandoned);
        }
        let timeout = Duration::from_secs(pool.service.timeout_seconds);
        let mut deadline = Instant::now() + timeout;
        let mut lost = 0;
        let mut recovered = 0;
        loop {
            let sent = data.as_ref().map_or(0, |(k, _)| k.rebinds());
            let (outcome, host) = self
                .call_once(
                    &pool,
                    d.clone(),
                    t0,
                    &ctx.key,
                    deadline,
                    sess.clone(),
                    near.as_deref(),
                    data.clone(),
                    (chain.take(), map.take()),
                )
                .await;
            match host {
                Some(host) if lost < HOST_LOSS_RETRIES && Instant::now() < deadline => {
                    lost += 1;
                    // The host the placement named may be the one lost.
                    near = None;
                    tracing::warn!(function = %d.function, run = d.run, %host,
                        "the connection to an instance on another host broke: trying the run on another instance");
                    pool.count_host_loss_retry();
                    continue;
                }
                _ => {}
            }
            // An input item lost with its worker: the steps that made it
            // run again, then so does this one (`lineage`).
            let Some((k, _)) = &data else {
                return outcome;
            };
            match &outcome.result {
                Err(e) if lineage::item_lost(e) && recovered < lineage::MAX_RECOVERIES => {
                    recovered += 1;
                    match self.recover(k, &d.input, t0, &ctx.failed, sent).await {
                        Ok(true) => {
                            tracing::info!(function = %d.function, run = d.run,
                                "input items lost with their worker were made again: trying the run again");
                            // The time the recovery took is not the function's.
                            deadline = Instant::now() + timeout;
                        }
                        Ok(false) => return outcome,
                        Err(why) => {
                            let error = format!("{e}; {why}");
                            let mut outcome = outcome;
                            outcome.result = Err(CallError::Data {
                                function: d.function.to_string(),
                                error,
                                status: 502,
                            });
                            return outcome;
                        }
                    }
                }
                _ => return outcome,
            }
        }
    }

    /// One try of [`Platform::call`] on one instance (on host `near` if
    /// the pool can). Also returns the
    /// instance's host when it is another machine and the connection to it
    /// broke before an answer (the instance is then out of the pool).
    #[allow(clippy::too_many_arguments)]
    async fn call_once(
        self: &Arc<Self>,
        pool: &Arc<FunctionPool>,
        d: Dispatch,
        t0: Instant,
        key: &str,
        deadline: Instant,
        sess: Option<Arc<stratus_nodestore::Session>>,
        near: Option<&str>,
        data: KeepData,
        (chain, map): (Option<chain::Chain>, Option<mapped::MapPlan>),
    ) -> (RunOutcome, Option<String>) {
        let mut d = d;
        let timeout = Duration::from_secs(pool.service.timeout_seconds);
        let fname = pool.service.name.clone();
        let lease = match pool.acquire_near(deadline, near).await {
            Ok(l) => l,
            Err(e) => {
                return (
                    RunOutcome::refused(d.run, micros(t0), CallError::Pool(e)),
                    None,
                )
            }
        };
        // Each call holds a connection (a file descriptor) until its response
        // is read: past the platform's budget, calls wait for one to finish.
        let permit = match tokio::time::timeout_at(
            deadline.into(),
            self.calls.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                return (
                    RunOutcome::refused(
                        d.run,
                        micros(t0),
                        CallError::Busy {
                            function: fname,
                            limit: self.calls_limit,
                        },
                    ),
                    None,
                )
            }
        };
        let started_us = micros(t0);
        let instance = lease.slot.id.clone();
        let cold_start_us = lease.cold_start_us;
        // Items kept on workers: named to an agent, fetched for anyone else.
        let mut in_size = None;
        let mut parts = None;
        let mut kept_for = None;
        if let Some((k, keep)) = &data {
            if lease.slot.host.is_some() {
                let at = lease
                    .slot
                    .uri
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default();
                if *keep != kept::Keep::No && !at.is_empty() {
                    kept_for = Some((k.clone(), at, lease.slot.authorization.clone(), *keep));
                }
                match k.parts(d.input.clone().into_chunks()) {
                    None => {}
                    Some(Ok(p)) => {
                        in_size = Some(p.total);
                        parts = Some(p);
                    }
                    Some(Err(error)) => {
                        let e = CallError::Data {
                            function: fname,
                            error,
                            status: 500,
                        };
                        return (RunOutcome::refused(d.run, micros(t0), e), None);
                    }
                }
            } else if k.in_payload(&d.input) {
                let input = std::mem::replace(&mut d.input, Payload::Raw(Bytes::new()));
                match k.resolve(input, deadline).await {
                    Ok(p) => d.input = p,
                    Err(error) => {
                        let e = CallError::Data {
                            function: fname,
                            error,
                            status: 502,
                        };
                        return (RunOutcome::refused(d.run, micros(t0), e), None);
                    }
                }
            }
        }
        // What the run was sent, stand-ins included: a step to run again
        // if the item it keeps is lost (`lineage`).
        let origin = kept_for.as_ref().map(|_| d.clone());
        // Successors its worker runs after it (`chain`), leased here.
        let leased = match (chain, &kept_for, &parts) {
            (Some(ch), Some((_, _, _, kept::Keep::Whole)), _) => {
                self.lease_chain(ch, &lease, (&d.function, timeout), deadline)
                    .await
            }
            _ => chain::Leased::default(),
        };
        let then_header = leased.header();
        // A map its worker runs on the elements as they arrive (`mapped`).
        let mut map_leased = match (map, &kept_for) {
            (Some(mp), Some((_, _, _, kept::Keep::Split))) => {
                self.lease_map(mp, &lease, deadline).await
            }
            _ => None,
        };
        let mut sent = 0u64;
        let byref = match (sess, &lease.slot.data_dir) {
            (Some(sess), Some(dir)) => Some(byref::ByRef {
                sess,
                dir: dir.path.clone(),
            }),
            _ => None,
        };
        let mut req = match &byref {
            Some(b) => {
                let (framing, paths) = match byref::stage(&b.sess, &d.input).await {
                    Ok(x) => x,
                    Err(e) => {
                        let e = byref::call_error(&fname, e);
                        return (RunOutcome::refused(d.run, micros(t0), e), None);
                    }
                };
                let mut req = http::Request::post(lease.slot.uri.clone())
                    .header(crate::retry::IDEMPOTENCY_HEADER, key)
                    .body(ChunksBody::default())
                    .expect("valid request");
                if let Err(e) = byref::add_headers(req.headers_mut(), framing, &paths) {
                    let e = byref::call_error(&fname, e);
                    return (RunOutcome::refused(d.run, micros(t0), e), None);
                }
                req
            }
            None if d.input.len() > self.cfg.max_body_bytes => {
                // A by-reference function's instance without an output
                // directory: the body cap applies.
                let e = CallError::EdgeTooLarge {
                    function: fname,
                    size: d.input.len(),
                    limit: self.cfg.max_body_bytes,
                };
                return (RunOutcome::refused(d.run, micros(t0), e), None);
            }
            None => {
                let content_type = crate::body::content_type(&d.input);
                let req = http::Request::post(lease.slot.uri.clone())
                    .header(http::header::CONTENT_TYPE, content_type)
                    .header(crate::retry::IDEMPOTENCY_HEADER, key);
                match parts.take() {
                    Some(p) => {
                        sent = p.inline_len;
                        let mut req = req.body(ChunksBody::new(p.inline)).expect("valid request");
                        req.headers_mut()
                            .insert(stratus_nodestore::remote::PARTS_HEADER, p.header);
                        req
                    }
                    None => {
                        sent = d.input.len() as u64;
                        req.body(ChunksBody::from(d.input)).expect("valid request")
                    }
                }
            }
        };
        if let Some(v) = then_header {
            req.headers_mut()
                .insert(stratus_nodestore::remote::THEN_HEADER, v);
        }
        if let Some(v) = map_leased.as_ref().and_then(mapped::MapLeased::header) {
            req.headers_mut()
                .insert(stratus_nodestore::remote::MAP_THEN_HEADER, v);
        }
        if let Some((k, _, _, keep)) = &kept_for {
            if let Ok(v) = http::HeaderValue::from_str(k.invocation()) {
                let h = req.headers_mut();
                h.insert(stratus_nodestore::remote::KEEP_HEADER, v);
                if k.inline_below() > 0 {
                    h.insert(
                        stratus_nodestore::remote::INLINE_BELOW_HEADER,
                        http::HeaderValue::from(k.inline_below()),
                    );
                }
                if *keep == kept::Keep::Split {
                    h.insert(
                        stratus_nodestore::remote::SPLIT_HEADER,
                        http::HeaderValue::from_static("json"),
                    );
                }
            }
        }
        self.metrics.payload_sent.inc_by(sent);
        let received = self.metrics.payload_received.clone();
        if let Some(auth) = &lease.slot.authorization {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        pool.count_request();
        let client = self.client.clone();
        let limit = self.cfg.max_body_bytes;
        let f2 = fname.clone();
        let chained = leased.links;
        // The chain may take as long as its steps' timeouts together, a
        // map on arrival as long again as its function's.
        let map_extra = map_leased.as_ref().map_or(Duration::ZERO, |m| m.extra);
        let deadline = deadline + leased.extra + map_extra;
        let map_leases = map_leased.as_mut().map(|m| std::mem::take(&mut m.leases));
        // Where the successors' outputs are kept (the fut takes `kept_for`).
        let chain_at = kept_for
            .as_ref()
            .map(|(k, at, auth, _)| (k.clone(), at.clone(), auth.clone()));
        let chain_leases = leased.leases;
        let map_at = chain_at.clone();
        let mut fut = Box::pin(async move {
            let _permit = permit;
            // The successors' instances stay leased until their worker answers.
            let _chain_leases = chain_leases;
            let _map_leases = map_leases;
            let resp = client
                .request(req)
                .await
                .map_err(|e| Err(crate::error_chain(&e)))?;
            let status = resp.status();
            let is_chain = status.is_success()
                && resp
                    .headers()
                    .contains_key(stratus_nodestore::remote::CHAIN_HEADER);
            let is_mapped = status.is_success()
                && resp
                    .headers()
                    .contains_key(stratus_nodestore::remote::MAPPED_HEADER);
            let answer = match &kept_for {
                Some(_) if status.is_success() => kept::answer(resp.headers()),
                _ => None,
            };
            let out_file = match &byref {
                Some(_) if status.is_success() => resp
                    .headers()
                    .get(stratus_nodestore::wire::OUT_HEADER)
                    .cloned(),
                _ => None,
            };
            let body = stratus_nodestore::gather::read(resp.into_body(), limit)
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Ok(CallError::TooLarge {
                            function: f2.clone(),
                            limit,
                        })
                    } else {
                        Err(crate::error_chain(&*e))
                    }
                })?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                    .trim()
                    .to_string();
                return Err(Ok(CallError::Status {
                    function: f2,
                    code: status.as_u16(),
                    body: text,
                }));
            }
            if let (Some((k, at, auth, keep)), true) = (&kept_for, is_chain) {
                let reply: stratus_nodestore::remote::ChainReply = serde_json::from_slice(&body)
                    .map_err(|e| {
                        Ok(CallError::Data {
                            function: f2.clone(),
                            error: format!("the worker at {at} answered a chain badly: {e}"),
                            status: 502,
                        })
                    })?;
                let mut steps = reply.steps.into_iter();
                let Some(first) = steps.next() else {
                    return Err(Ok(CallError::Data {
                        function: f2.clone(),
                        error: format!("the worker at {at} answered a chain of no steps"),
                        status: 502,
                    }));
                };
                let out = chain::step_result(k, at, auth.clone(), &f2, &first).map_err(Ok)?;
                if let Some(d) = origin {
                    k.produced(d, *keep, &out);
                }
                return Ok((out, steps.collect(), Vec::new()));
            }
            if let (Some((k, at, auth, keep)), true) = (&kept_for, is_mapped) {
                let bad = |e: String| {
                    Ok(CallError::Data {
                        function: f2.clone(),
                        error: format!("the worker at {at} answered a mapped split badly: {e}"),
                        status: 502,
                    })
                };
                let reply: stratus_nodestore::remote::MapReply =
                    serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
                let Some(answer @ kept::Answer::Split { .. }) = answer else {
                    return Err(bad("no item count".into()));
                };
                let items = Bytes::from(reply.items);
                let out = k.output(at, auth.clone(), answer, &items).map_err(bad)?;
                if let Some(d) = origin {
                    k.produced(d, *keep, &out);
                }
                return Ok((out, Vec::new(), reply.runs));
            }
            // (A chain's reply lists steps: no payload.)
            received.inc_by(body.len() as u64);
            if let (Some((k, at, auth, keep)), Some(answer)) = (&kept_for, answer) {
                let out = k.output(at, auth.clone(), answer, &body).map_err(|error| {
                    Ok(CallError::Data {
                        function: f2.clone(),
                        error,
                        status: 502,
                    })
                })?;
                if let Some(d) = origin {
                    k.produced(d, *keep, &out);
                }
                return Ok((out, Vec::new(), Vec::new()));
            }
            let whole = |body| kept::Output {
                body,
                size: None,
                split: None,
            };
            if let (Some(b), Some(name)) = (&byref, out_file) {
                return byref::adopt(b, name)
                    .await
                    .map(|b| (whole(b), Vec::new(), Vec::new()))
                    .map_err(|e| Ok(byref::call_error(&f2, e)));
            }
            Ok((whole(body), Vec::new(), Vec::new()))
        });
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut host_lost = None;
        let mut out_size = None;
        let mut split = None;
        let mut later = Vec::new();
        let mut mapped_runs = Vec::new();
        let result = match tokio::time::timeout(remaining, &mut fut).await {
            Ok(Ok((
                kept::Output {
                    body: b,
                    size,
                    split: s,
                },
                rest,
                maps,
            ))) => {
                out_size = size;
                split = s;
                later = rest;
                mapped_runs = maps;
                Ok(b)
            }
            Ok(Err(Ok(e))) => Err(e),
            Ok(Err(Err(transport))) if lease.slot.host.is_some() => {
                // Its agent is unreachable: the host may be gone, so the
                // instance leaves the pool and the run is tried elsewhere.
                pool.kill(&lease.slot);
                host_lost = lease.slot.host.clone();
                Err(CallError::Connection {
                    function: fname.clone(),
                    instance: format!("{instance} on {}", host_lost.as_deref().unwrap_or("?")),
                    error: transport,
                })
            }
            Ok(Err(Err(transport))) => {
                // Did the instance die under us?
                tokio::time::sleep(Duration::from_millis(5)).await;
                let status = lease.slot.exit_status();
                match status {
                    Some(status) => {
                        pool.kill(&lease.slot);
                        tokio::time::sleep(Duration::from_millis(20)).await; // let the log pumps drain
                        Err(CallError::Crashed {
                            function: fname.clone(),
                            instance: instance.clone(),
                            logs: pool.logs.tail_of(&instance, 10),
                            status,
                        })
                    }
                    None => Err(CallError::Connection {
                        function: fname.clone(),
                        instance: instance.clone(),
                        error: transport,
                    }),
                }
            }
            Err(_) => {
                // The instance may still be working on it: keep its slot until it
                // answers, and kill it if it never does.
                let grace = self.cfg.timeout_grace;
                let p = pool.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(grace, fut).await.is_err() {
                        tracing::warn!(instance = %lease.slot.id, "instance still busy after timeout grace: killing it");
                        p.kill(&lease.slot);
                    }
                    drop(lease);
                });
                let outcome = RunOutcome {
                    run: d.run,
                    started_us,
                    cold_start_us,
                    instance,
                    finished_us: micros(t0),
                    result: Err(CallError::Timeout {
                        function: fname,
                        secs: timeout.as_secs(),
                    }),
                    sizes: (in_size, None),
                    split: None,
                    then: Vec::new(),
                };
                return (outcome, None);
            }
        };
        drop(lease);
        // The successors its worker ran: their outcomes wait in the driver.
        let mut then: Vec<(mapped::PreKey, chain::PreDone)> = match chain_at {
            Some((k, at, auth)) => chain::pre_done(
                &k,
                &at,
                auth,
                chained,
                later,
                started_us,
                out_size.unwrap_or(0),
            )
            .into_iter()
            .map(|(step, p)| ((step, 0), p))
            .collect(),
            None => Vec::new(),
        };
        // So do the map runs it made on the elements.
        if let (Some(ml), Some((k, at, auth)), Some(split)) = (&map_leased, map_at, &split) {
            let runs = mapped::pre_done(&k, &at, auth, ml, split, mapped_runs, started_us);
            then.extend(runs);
        }
        let outcome = RunOutcome {
            run: d.run,
            started_us,
            cold_start_us,
            instance,
            finished_us: micros(t0),
            result,
            sizes: (in_size, out_size),
            split,
            then,
        };
        (outcome, host_lost)
    }
}
