//! The policy stage: holds the active revision, decides per request, narrows searches and
//! verifies responses.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use phigate_plugin::{
    async_trait, BackgroundTask, BulkKind, Change, ChangeSink, ChangeTrigger, Decision, Denial, ErrorCode,
    Flow, Interaction, PreRead, Readiness, RequestCtx, ResponseHead, ShadowDecision, Stage,
};
use regorus::Value;

use crate::bulk::NdjsonCheck;
use crate::error::{EvalError, LoadError};
use crate::events;
use crate::labels::{without_counts, without_entries, NotAnObject, Withheld, WithheldNotice};
use crate::narrow::{narrow, NarrowError};
use crate::permit::{PatientTenants, Permit};
use crate::revision::{GatewaySettings, Revision, Sources};
use crate::verify::{verify_collect, Verdict, Verified};
use crate::{decision, input, pre_read};

/// The header a principal states its emergency-access reason in.
pub const BREAK_GLASS_HEADER: &str = "x-break-glass-reason";

/// Runtime settings resolved from [`crate::PolicyConfig`].
#[derive(Debug, Clone)]
pub(crate) struct StageSettings {
    pub(crate) dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) entrypoint: String,
    pub(crate) max_eval: Duration,
    pub(crate) gateway: GatewaySettings,
    pub(crate) max_reason_bytes: usize,
    pub(crate) max_narrow_patients: usize,
    pub(crate) oversized_page: crate::page::OversizedPage,
    pub(crate) hide_counts: bool,
    pub(crate) withheld_notice: WithheldNotice,
    pub(crate) test_on_reload: bool,
    pub(crate) watch: bool,
    pub(crate) cache: Option<(Duration, u64)>,
    pub(crate) shadow: Option<ShadowSettings>,
}

/// Where the shadow policy is (see [`crate::ShadowConfig`]).
#[derive(Debug, Clone)]
pub(crate) struct ShadowSettings {
    pub(crate) dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) entrypoint: String,
}

/// Shared state of the stage and its reload task.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) settings: StageSettings,
    pub(crate) active: ArcSwap<Revision>,
    /// The shadow revision, compared and never enforced.
    pub(crate) shadow: Option<ArcSwap<Revision>>,
    pub(crate) cache: Option<moka::sync::Cache<String, Arc<Decision>>>,
    /// Serialises reloads (watcher and SIGHUP); never taken on the request path.
    pub(crate) reload_lock: Mutex<()>,
    /// Publishes each newly active revision.
    pub(crate) revisions: tokio::sync::watch::Sender<String>,
    /// True while the file watcher is established.
    pub(crate) watching: tokio::sync::watch::Sender<bool>,
    /// Where applied and rejected revisions are reported (set once, when the gateway records
    /// changes).
    pub(crate) changes: OnceLock<ChangeSink>,
}

/// The policy stage. Cheap to clone handles to it are not needed: the gateway holds it in an
/// `Arc<dyn Stage>`; the reload task holds the shared state.
#[derive(Debug)]
pub struct PolicyStage {
    pub(crate) inner: Arc<Inner>,
}

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new revision (this content hash) is now active.
    Applied(String),
    /// The files did not change; the active revision stays.
    Unchanged(String),
}

impl PolicyStage {
    /// A refusal for a record's security label, answered 404 `resource_not_found` when the
    /// notice is `silent` (the record looks absent; the audit keeps the true code). Anything
    /// else unchanged.
    fn disguised(&self, d: Denial) -> Denial {
        if d.code == ErrorCode::SecurityLabelNotPermitted
            && self.inner.settings.withheld_notice == WithheldNotice::Silent
        {
            d.answered_as(ErrorCode::ResourceNotFound)
        } else {
            d
        }
    }
    /// Loads the active revision and the shadow one, if configured; an error names the key of
    /// the directory that failed (`dir` or `shadow.dir`).
    pub(crate) fn new(settings: StageSettings) -> Result<PolicyStage, (&'static str, LoadError)> {
        let revision = load_revision(&settings).map_err(|e| ("dir", e))?;
        let shadow = match &settings.shadow {
            Some(sh) => {
                let rev = load_at(&settings, &sh.dir, &sh.data_dir, &sh.entrypoint)
                    .map_err(|e| ("shadow.dir", e))?;
                log::info!("policy shadow revision {} loaded (compared, not enforced)", rev.id);
                Some(ArcSwap::from_pointee(rev))
            }
            None => None,
        };
        events::revision_active(None, &revision.id);
        let cache = settings
            .cache
            .map(|(ttl, max)| moka::sync::Cache::builder().time_to_live(ttl).max_capacity(max).build());
        let (revisions, _) = tokio::sync::watch::channel(revision.id.to_string());
        Ok(PolicyStage {
            inner: Arc::new(Inner {
                revisions,
                watching: tokio::sync::watch::channel(false).0,
                settings,
                active: ArcSwap::from_pointee(revision),
                shadow,
                cache,
                reload_lock: Mutex::new(()),
                changes: OnceLock::new(),
            }),
        })
    }

    /// The active revision (content hash).
    pub fn revision(&self) -> String {
        self.inner.active.load().id.to_string()
    }

    /// The shadow revision (content hash), when a shadow policy is configured.
    pub fn shadow_revision(&self) -> Option<String> {
        self.inner.shadow.as_ref().map(|s| s.load().id.to_string())
    }

    /// Follows the active revision: the receiver sees each swap (for logs, or to wait for a
    /// file-watch reload).
    pub fn subscribe_revisions(&self) -> tokio::sync::watch::Receiver<String> {
        self.inner.revisions.subscribe()
    }

    /// Whether the file watcher is established (it starts with the background task).
    pub fn watching(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.watching.subscribe()
    }

    /// Reloads `dir` now: reads, compiles and tests the files off the request path, then swaps
    /// atomically. Blocking (compiling and testing takes milliseconds): call it from a blocking
    /// thread (`spawn_blocking`), for example on SIGHUP. An applied or rejected revision is
    /// reported to the attached [`ChangeSink`] with trigger `sighup`.
    ///
    /// # Errors
    /// The load error when the new files fail to parse, compile or pass their tests; the active
    /// revision keeps serving, the rejection is logged and counted.
    pub fn reload_now(&self) -> Result<ReloadOutcome, LoadError> {
        self.inner.reload(ChangeTrigger::Sighup)
    }

    /// Decides for a request context without applying the decision (for tests, benches and
    /// `policy eval`).
    ///
    /// # Errors
    /// An [`EvalError`] when the policy fails; the stage answers those with `policy_error`.
    pub fn decide(&self, ctx: &RequestCtx) -> Result<Arc<Decision>, EvalError> {
        self.inner.decide(ctx).map(|(decision, _, shadow)| match shadow {
            None => decision,
            Some(shadow) => Arc::new(Decision { shadow: Some(shadow), ..Decision::clone(&decision) }),
        })
    }
}

fn load_revision(s: &StageSettings) -> Result<Revision, LoadError> {
    load_at(s, &s.dir, &s.data_dir, &s.entrypoint)
}

/// Reads, tests (when `test_on_reload`) and compiles the policies in `dir` with `data_dir`.
fn load_at(
    s: &StageSettings,
    dir: &std::path::Path,
    data_dir: &std::path::Path,
    entrypoint: &str,
) -> Result<Revision, LoadError> {
    prepare(s, &Sources::read(dir, data_dir, &s.gateway)?, entrypoint)
}

/// Tests (when `test_on_reload`) and compiles policies already read: at start and on reloads,
/// for the active policy and the shadow alike.
pub(crate) fn prepare(s: &StageSettings, sources: &Sources, entrypoint: &str) -> Result<Revision, LoadError> {
    if s.test_on_reload {
        crate::testing::require_passing(sources, &s.gateway)?;
    }
    Revision::compile(sources, &s.gateway, entrypoint, s.max_eval)
}

/// A decision, the patient → tenant index of its revision, and the shadow policy's comparison.
type Decided = (Arc<Decision>, Arc<PatientTenants>, Option<ShadowDecision>);

impl Inner {
    /// The decision, with the patient → tenant index of the revision that made it and, when a
    /// shadow policy is configured, what it decided.
    fn decide(&self, ctx: &RequestCtx) -> Result<Decided, EvalError> {
        let revision = self.active.load();
        let index = revision.patient_tenants.clone();
        let base = input::build(ctx);
        // The shadow sees the same input, whatever the active decision or the cache did.
        let shadow_input = self.shadow.as_ref().map(|_| input::with_time(base.clone(), ctx));
        let key = match &self.cache {
            Some(cache) => {
                let key = format!("{}\n{}", revision.id, base.to_json_str().unwrap_or_default());
                if let Some(hit) = cache.get(&key) {
                    events::CACHE.with_label_values(&["hit"]).inc();
                    let shadow = self.compare_shadow(ctx, &hit, shadow_input);
                    return Ok((hit, index, shadow));
                }
                events::CACHE.with_label_values(&["miss"]).inc();
                Some(key)
            }
            None => None,
        };
        let out: Value = revision.evaluate(input::with_time(base, ctx))?;
        let decision = Arc::new(decision::parse(&out, &revision)?);
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(key, decision.clone());
        }
        let shadow = self.compare_shadow(ctx, &decision, shadow_input);
        Ok((decision, index, shadow))
    }

    /// Evaluates the shadow revision on `input` and records how it compares with `active`.
    fn compare_shadow(
        &self,
        ctx: &RequestCtx,
        active: &Decision,
        input: Option<Value>,
    ) -> Option<ShadowDecision> {
        let (Some(shadow), Some(input)) = (&self.shadow, input) else { return None };
        let revision = shadow.load();
        let decided = revision.evaluate(input).and_then(|out| decision::parse(&out, &revision));
        Some(crate::shadow::record(ctx, active, decided.as_ref(), &revision.id))
    }
}

/// Reads and validates `X-Break-Glass-Reason`: present means break-glass is claimed, and then it
/// must be non-empty visible text within the bound.
fn break_glass_reason(ctx: &RequestCtx, max: usize) -> Result<Option<String>, Denial> {
    let mut values = ctx.request.headers.get_all(BREAK_GLASS_HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(ctx.break_glass_reason.clone());
    };
    let refuse = |why: &'static str| Denial::new(ErrorCode::BreakGlassNotPermitted).with_cause(why);
    if values.next().is_some() {
        return Err(refuse("more than one break-glass reason header"));
    }
    let text = v.to_str().map_err(|_| refuse("break-glass reason is not text"))?.trim();
    if text.is_empty() {
        return Err(refuse("empty break-glass reason"));
    }
    if text.len() > max {
        return Err(refuse("break-glass reason too long"));
    }
    Ok(Some(text.to_owned()))
}

fn deny(decision: &Decision) -> Denial {
    let code = decision::deny_code(&decision.reasons);
    // Reasons are policy-defined identifiers (bounded), safe for the log.
    Denial::new(code).with_cause(format!(
        "policy {} denied: {}",
        decision.revision,
        decision.reasons.join(",")
    ))
}

impl PolicyStage {
    fn apply_page_cap(&self, ctx: &mut RequestCtx, decision: &Decision) -> Result<(), Denial> {
        let Some(max) = decision.obligations.max_page_size else {
            return Ok(());
        };
        let capped = crate::page::cap(
            ctx.fhir.as_mut(),
            &mut ctx.request.query,
            max,
            self.inner.settings.oversized_page,
        );
        let label = match &capped {
            Ok(None) => return Ok(()),
            Ok(Some(crate::page::PageCap::Within)) => "within",
            Ok(Some(crate::page::PageCap::Added)) => "added",
            Ok(Some(crate::page::PageCap::Clamped)) => "clamped",
            Err(_) => "refused",
        };
        events::PAGE_CAPS.with_label_values(&[label]).inc();
        capped.map(|_| ())
    }

    fn apply_narrowing(&self, ctx: &mut RequestCtx, decision: &Decision) -> Result<(), Denial> {
        let Some(patients) = decision.obligations.narrow_patients.as_deref() else {
            return Ok(());
        };
        let max = self.inner.settings.max_narrow_patients;
        match narrow(ctx.fhir.as_ref(), patients, max, &mut ctx.request.query) {
            Ok(()) => {
                events::NARROWING.with_label_values(&["narrowed"]).inc();
                Ok(())
            }
            Err(e) => {
                events::NARROWING.with_label_values(&["refused"]).inc();
                let (code, cause) = match e {
                    NarrowError::Empty => (ErrorCode::PatientNotPermitted, "nobody to narrow to"),
                    NarrowError::TooMany => (ErrorCode::PolicyDenied, "too many patients to narrow to"),
                    NarrowError::NotASearch => {
                        (ErrorCode::PolicyError, "narrowing obligation on a non-search")
                    }
                };
                Err(Denial::new(code).with_cause(cause))
            }
        }
    }
}

#[async_trait]
impl Stage for PolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn readiness(&self) -> Readiness {
        let watch = if *self.inner.watching.borrow() { "; watching" } else { "" };
        let shadow = self.shadow_revision().map(|s| format!("; shadow {s}")).unwrap_or_default();
        Readiness::Ready(Some(format!("policy revision {}{shadow}{watch}", self.revision())))
    }

    /// SIGHUP: compile and test the policy files on a thread of their own (never on a request
    /// worker), then swap; a rejected revision is logged and counted, the old one keeps serving.
    fn reload(&self) {
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new().name("phigate-policy-reload".into()).spawn(move || {
            if let Err(e) = inner.reload(ChangeTrigger::Sighup) {
                log::warn!("policy reload rejected: {e}");
            }
        });
        if let Err(e) = spawned {
            log::warn!("policy reload could not start: {e}");
        }
    }

    /// Keeps the sink for later reloads and reports the revision in force at start (trigger
    /// `startup`, no previous revision): the trail then says which revision decided from when.
    fn attach_changes(&self, changes: ChangeSink) {
        let _guard = self.inner.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.changes.set(changes).is_ok() {
            let revision = self.revision();
            self.inner
                .report(ChangeTrigger::Startup, Change::PolicyRevisionApplied { previous: None, revision });
        }
    }

    fn background_tasks(&self) -> Vec<BackgroundTask> {
        if !self.inner.settings.watch {
            return Vec::new();
        }
        vec![Box::pin(crate::reload::watch(self.inner.clone()))]
    }

    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        ctx.break_glass_reason = break_glass_reason(ctx, self.inner.settings.max_reason_bytes)?;
        crate::bulk::check_owner(ctx)?;
        let (decision, index, shadow) = match self.inner.decide(ctx) {
            Ok(d) => d,
            Err(e) => {
                let revision = self.inner.active.load().id.clone();
                events::eval_failed(&revision, ctx.request_id.as_str(), &e);
                return Err(Denial::new(ErrorCode::PolicyError).with_cause(e.kind()));
            }
        };
        let decision = Decision { shadow, ..Decision::clone(&decision) };
        if !decision.allow {
            events::DECISIONS.with_label_values(&["deny"]).inc();
            let denial = deny(&decision);
            ctx.decision = Some(decision);
            return Err(denial);
        }
        events::DECISIONS.with_label_values(&["allow"]).inc();
        // The response must be checked before any byte of it reaches the client, so that a
        // violation can still replace the status: ask for the whole response now.
        // An export's status answers a manifest (JSON naming no patient): verified like any
        // answer, so that whatever else a status URL answers is checked too.
        let permit = match ctx.bulk.as_ref().map(|b| b.kind) {
            None | Some(BulkKind::Status) => Permit::of(&decision, &index),
            Some(BulkKind::File) => {
                // An export file is NDJSON, checked line by line as it streams.
                if let Some(permit) = Permit::of(&decision, &index) {
                    ctx.response.filter_body = true;
                    ctx.extensions.insert(NdjsonCheck::new(permit));
                }
                None
            }
        };
        if let Some(permit) = permit {
            // Verification reads FHIR JSON: a client asking for XML is refused before anything
            // is forwarded, one accepting anything gets JSON.
            match crate::format::judge(&ctx.request) {
                Ok(None) => {}
                Ok(Some(accept)) => ctx.upstream.set_headers.push((http::header::ACCEPT, accept)),
                Err(denial) => {
                    ctx.decision = Some(decision);
                    return Err(denial);
                }
            }
            if !permit.labels().is_empty() {
                // The labels are read from each resource's meta: keep it in subsetted answers.
                let kind = crate::elements::body_kind(ctx);
                let body = ctx.request.body.as_deref().filter(|_| ctx.request.method == http::Method::POST);
                let kept = crate::elements::labels_readable(ctx)
                    .and_then(|()| crate::elements::keep_meta(&mut ctx.request.query, body.zip(kind)));
                if let Err(denial) = kept {
                    ctx.decision = Some(decision);
                    return Err(denial);
                }
            }
            ctx.response.buffer_body = true;
            // The record a write by id changes is judged before the write is sent.
            pre_read::ask_if_wanted(ctx, &self.inner.active.load());
            ctx.extensions.insert(permit);
        }
        let shaped = self.apply_narrowing(ctx, &decision).and_then(|()| self.apply_page_cap(ctx, &decision));
        ctx.decision = Some(decision);
        shaped.map(|()| Flow::Continue)
    }

    fn on_pre_read(&self, ctx: &mut RequestCtx, read: PreRead<'_>) -> Result<(), Denial> {
        pre_read::judge(ctx, read).map_err(|d| self.disguised(d))
    }

    fn on_response(&self, ctx: &mut RequestCtx, head: &mut ResponseHead<'_>) -> Result<(), Denial> {
        if ctx.extensions.get::<NdjsonCheck>().is_some() {
            return ndjson_head(head);
        }
        let verify = ctx.extensions.get::<Permit>().is_some();
        if verify && !head.status.is_success() {
            // An error answer is checked too, but as what it is (see `ErrorAnswer`).
            ctx.extensions.insert(ErrorAnswer(head.status));
            return Ok(());
        }
        if !verify || head.status.as_u16() == 204 {
            return Ok(());
        }
        // An export in progress answers 202 without a body (or media type); the body, if any,
        // is still checked as JSON.
        if head.status.as_u16() == 202 && ctx.bulk.as_ref().is_some_and(|b| b.kind == BulkKind::Status) {
            return Ok(());
        }
        let json = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
        if !json {
            // XML or anything else cannot be checked: refused rather than passed unverified.
            events::RESPONSE_CHECKS.with_label_values(&["unreadable"]).inc();
            return Err(Denial::new(ErrorCode::PolicyError).with_cause("response not verifiable (not JSON)"));
        }
        if let Some(created) = crate::created::from_head(ctx.fhir.as_ref(), head.status, head.headers) {
            ctx.extensions.insert(created);
        }
        ctx.response.buffer_body = true;
        Ok(())
    }

    fn on_response_chunk(&self, ctx: &mut RequestCtx, chunk: Bytes, end: bool) -> Result<Bytes, Denial> {
        let Some(check) = ctx.extensions.get_mut::<NdjsonCheck>() else {
            return Ok(chunk);
        };
        let sent = check.feed(&chunk, end);
        if sent.is_err() || end {
            if let Some(check) = ctx.extensions.remove::<NdjsonCheck>() {
                check.record(ctx);
            }
        }
        sent
    }

    fn on_buffered_response(&self, ctx: &mut RequestCtx, body: &[u8]) -> Result<(), Denial> {
        if let Some(mut check) = ctx.extensions.remove::<NdjsonCheck>() {
            // An export file another stage had buffered: the whole body, line by line, as if
            // it had streamed (never sent unchecked).
            let sent = check.feed(body, true);
            check.record(ctx);
            let sent = sent?;
            if sent.len() != body.len() {
                ctx.response.replace_body = Some(sent);
            }
            return Ok(());
        }
        if let Some(ErrorAnswer(status)) = ctx.extensions.remove::<ErrorAnswer>() {
            check_error_answer(ctx, status, body);
            return Ok(());
        }
        let created = ctx.extensions.remove::<crate::created::Created>();
        let Some(permit) = ctx.extensions.get::<Permit>() else {
            return Ok(());
        };
        let created = created.or_else(|| crate::created::from_bundle(ctx.fhir.as_ref(), body));
        let with_created;
        let permit = match created {
            Some(created) => {
                with_created = permit.clone().with_created(created.0);
                &with_created
            }
            None => permit,
        };
        let mut checked = verify_collect(body, permit);
        match checked.verdict {
            Verdict::Clean => {
                match std::mem::take(&mut checked.withheld) {
                    Withheld::Nothing => {}
                    Withheld::Whole => {
                        events::RESPONSE_CHECKS.with_label_values(&["security_label"]).inc();
                        let refused = Denial::new(ErrorCode::SecurityLabelNotPermitted)
                            .with_cause("response carries a withheld security label");
                        // Kept silent, a read of the record, a version of it or its history
                        // answers as if it did not exist; a search or a type's history cannot.
                        let of_one_record = ctx.fhir.as_ref().is_some_and(|f| {
                            matches!(f.interaction, Interaction::Read | Interaction::Vread)
                                || (f.interaction == Interaction::History && f.id.is_some())
                        });
                        return Err(if of_one_record { self.disguised(refused) } else { refused });
                    }
                    Withheld::Entries(drop) => {
                        let notice = self.inner.settings.withheld_notice;
                        let (sent, cut) = withhold_entries(body, permit, &drop, notice)?;
                        checked = sent;
                        ctx.response.withheld = Some(u32::try_from(drop.len()).unwrap_or(u32::MAX));
                        ctx.response.replace_body = Some(cut.into());
                    }
                }
                let hide = self.inner.settings.hide_counts && !permit.labels().is_empty();
                if hide && ctx.bulk.as_ref().is_some_and(|b| b.kind == BulkKind::Status) {
                    // A completed export's manifest: its files' counts include the lines left out.
                    let sent = ctx.response.replace_body.as_deref().unwrap_or(body);
                    if let Some(hidden) = crate::bulk::manifest_without_counts(sent) {
                        events::HIDDEN_COUNTS.with_label_values::<&str>(&[]).inc();
                        ctx.response.replace_body = Some(hidden.into());
                    }
                }
                if hide && checked.entries.is_some() {
                    let sent = ctx.response.replace_body.as_deref().unwrap_or(body);
                    match without_counts(sent, &checked.root) {
                        Ok(None) => {}
                        Ok(Some(hidden)) => {
                            events::HIDDEN_COUNTS.with_label_values::<&str>(&[]).inc();
                            ctx.response.replace_body = Some(hidden.into());
                        }
                        Err(NotAnObject) => {
                            events::RESPONSE_CHECKS.with_label_values(&["security_label"]).inc();
                            return Err(Denial::new(ErrorCode::SecurityLabelNotPermitted)
                                .with_cause("the result's counts could not be removed"));
                        }
                    }
                }
                // What the body held, for the stages after this one (exfil windows, audit).
                ctx.response.patients = Some(checked.named);
                if ctx.response.entries.is_none() {
                    ctx.response.entries = checked.entries;
                }
                Ok(())
            }
            Verdict::Violation | Verdict::Unreadable => Err(refusal(&checked, "response")),
        }
    }
}

/// The upstream answered a verified request with an error status (4xx, 5xx, or a redirect).
#[derive(Debug, Clone, Copy)]
struct ErrorAnswer(http::StatusCode);

/// An error answer keeps its status (a client retries a 503, not a 403), and its body when that
/// is FHIR JSON naming only permitted patients and no withheld label. Any other body (a load
/// balancer's HTML page, a stack trace, an OperationOutcome naming someone else) is replaced
/// with an OperationOutcome saying so: errors never carry PHI past the gateway, and an
/// unreadable error page is not a policy error.
fn check_error_answer(ctx: &mut RequestCtx, status: http::StatusCode, body: &[u8]) {
    let Some(permit) = ctx.extensions.get::<Permit>() else { return };
    let checked = verify_collect(body, permit);
    if checked.verdict == Verdict::Clean && checked.withheld == Withheld::Nothing {
        // Sent as it is: the patients it names are disclosed, and the audit record says so.
        ctx.response.patients = Some(checked.named);
        return;
    }
    events::RESPONSE_CHECKS.with_label_values(&["error_body_withheld"]).inc();
    let outcome = serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": "exception",
            "diagnostics": format!(
                "The server answered {}; the gateway withheld its error body (not FHIR JSON it can check, or naming what this request may not see).",
                status.as_u16()
            ),
        }],
    });
    ctx.response.replace_body = Some(Bytes::from(outcome.to_string()));
    ctx.response
        .add_headers
        .push((http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/fhir+json")));
}

/// The refusal of a body (`what`: a response, a bulk file line) verification did not pass,
/// counted by reason. A patient the policy data places in no tenant is refused like another
/// tenant's, but counted and logged apart: most likely one registered on the server since the
/// data was last synced, and operators need to tell that from a cross-tenant answer.
pub(crate) fn refusal(checked: &Verified, what: &str) -> Denial {
    let (reason, code, cause) = match checked.verdict {
        Verdict::Violation if checked.unknown_patient => (
            "unknown_patient",
            ErrorCode::PatientNotPermitted,
            "names a patient the policy data places in no tenant (data.patients behind the server?)",
        ),
        Verdict::Violation => {
            ("violation", ErrorCode::PatientNotPermitted, "names a patient outside the permitted set")
        }
        Verdict::Clean | Verdict::Unreadable => {
            ("unreadable", ErrorCode::PolicyError, "is not readable JSON")
        }
    };
    events::RESPONSE_CHECKS.with_label_values(&[reason]).inc();
    Denial::new(code).with_cause(format!("{what} {cause}"))
}

/// An export file's answer must be NDJSON (or, for an error, JSON) to be checked line by line.
fn ndjson_head(head: &ResponseHead<'_>) -> Result<(), Denial> {
    if !head.status.is_success() || head.status.as_u16() == 204 {
        return Ok(());
    }
    let media = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let readable = media.as_deref().is_some_and(|m| {
        matches!(
            m,
            "application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson" | "application/json"
        ) || m.ends_with("+json")
    });
    if readable {
        return Ok(());
    }
    events::RESPONSE_CHECKS.with_label_values(&["unreadable"]).inc();
    Err(Denial::new(ErrorCode::PolicyError).with_cause("bulk file not verifiable (not NDJSON)"))
}

/// Leaves the entries at `drop` out of the search result `body` (the client gets the rest and an
/// outcome entry saying results were withheld): what the sent body holds, and the body. A body
/// the cut cannot be made in is refused.
fn withhold_entries(
    body: &[u8],
    permit: &Permit,
    drop: &[u32],
    notice: WithheldNotice,
) -> Result<(Verified, Vec<u8>), Denial> {
    let refused = || Denial::new(ErrorCode::SecurityLabelNotPermitted);
    let Some(cut) = without_entries(body, drop, notice) else {
        events::RESPONSE_CHECKS.with_label_values(&["security_label"]).inc();
        return Err(refused().with_cause("labelled entries could not be left out"));
    };
    // The sent body, checked again: what it names (for exfil and audit) without the entries left
    // out, and proof that nothing withheld is left.
    let mut sent = verify_collect(&cut, permit);
    if sent.verdict != Verdict::Clean || sent.withheld != Withheld::Nothing {
        events::RESPONSE_CHECKS.with_label_values(&["security_label"]).inc();
        return Err(refused().with_cause("labelled entries could not be left out"));
    }
    events::WITHHELD_ENTRIES.with_label_values::<&str>(&[]).inc_by(drop.len() as u64);
    // The outcome entry is the gateway's, not a result.
    if notice == WithheldNotice::Outcome {
        sent.entries = sent.entries.map(|n| n.saturating_sub(1));
    }
    Ok((sent, cut))
}
