//! Runs user templates (incoming transforms, routing rules, outgoing payload templates, previews)
//! in worker processes that the node can kill.
//!
//! MiniJinja's fuel counts instructions and the bytes that most operations produce, but not every
//! way a template can make work: lazy sequences (`[1] * 100000000`, `x + x` doubled in a loop)
//! and walks over shared structure cost far more than their fuel. Inside one process such a
//! render can only be waited for. In a worker it is bounded from outside whatever its kind: the
//! worker's address space is capped (`template_memory_mib`), and a render that has not answered
//! within `template_timeout_ms` has its worker killed. Either way the render fails with "template
//! does too much work"; the async runtime never runs such template code, so `/healthz` and other
//! tenants' requests never wait on one.
//!
//! The exception is a render whose cost is known before it starts: a template with no loops, no
//! arithmetic or concatenation and only filters that make one pass over their input, given a
//! context small enough for them ([`Template::is_cheap_for`]: about a millisecond of work at
//! most). The node renders those itself. That is most transforms in use (`{{ name }}`,
//! `{{ x | default('y') }}`, `{{ data | tojson }}`, `{% if %}`), and a trip to a worker and
//! back cost more than the render: two JSON encodings, four pipe writes and reads, two
//! context switches (a fifth of an incoming request's CPU, measured in docs/benchmarks.md).
//!
//! Workers are this executable run as `hookd render-worker` (see [`worker`]), kept in a pool of
//! `template_workers` and replaced when one is killed. Requests and answers are JSON frames with
//! a 4-byte length prefix on the worker's stdin and stdout.

pub mod worker;

use std::{path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use serde::Serialize;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::Semaphore,
    time::timeout,
};

use crate::domain::template::{Condition, Context, Source, Template, TemplateError};

/// How long a render may wait for a free worker before it is refused as unavailable.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long a new worker may take to start.
const START_WAIT: Duration = Duration::from_secs(10);

/// Limits and size of the worker pool.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Wall-clock time one render may take.
    pub timeout: Duration,
    /// Memory a worker may allocate beyond what it needs to start, in MiB.
    pub memory_mib: u64,
    /// Worker processes at most (renders in parallel).
    pub workers: usize,
    /// The executable run as a worker; `None`: this one.
    pub program: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The template failed, or did too much work: the caller's input is at fault.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// No worker could run it: the node is at fault (or overloaded).
    #[error("template workers unavailable: {0}")]
    Unavailable(String),
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Sandbox(Arc<Pool>);

struct Pool {
    settings: SandboxSettings,
    /// One permit per worker that may exist.
    slots: Semaphore,
    idle: std::sync::Mutex<Vec<Worker>>,
}

#[derive(Serialize)]
struct Request<'a> {
    source: &'a Source,
    context: &'a Value,
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Sandbox {
        Sandbox(Arc::new(Pool {
            slots: Semaphore::new(settings.workers.max(1)),
            settings,
            idle: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Renders `template` with `context`; see [`Template::render`].
    pub async fn render(
        &self,
        template: &Template,
        context: &Context<'_>,
    ) -> Result<Value, SandboxError> {
        if template.is_cheap_for(context)
            && let Some(rendered) = in_process(|| template.render(context))
        {
            return Ok(rendered?);
        }
        self.run(&template.source(), context.json()).await
    }

    /// Whether the routing rule holds for `context`; see [`Condition::matches`].
    pub async fn matches(
        &self,
        condition: &Condition,
        context: &Context<'_>,
    ) -> Result<bool, SandboxError> {
        if condition.is_cheap_for(context)
            && let Some(matched) = in_process(|| condition.matches(context))
        {
            return Ok(matched?);
        }
        Ok(self.run(&condition.source(), context.json()).await? == Value::Bool(true))
    }

    async fn run(&self, source: &Source, context: &Value) -> Result<Value, SandboxError> {
        let pool = &self.0;
        let request = serde_json::to_vec(&Request { source, context })
            .map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        let _slot = match timeout(QUEUE_WAIT, pool.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(unavailable("every template worker stayed busy")),
        };
        let idle = pool.idle.lock().expect("idle workers lock").pop();
        let mut worker = match idle {
            Some(worker) => worker,
            None => Worker::start(&pool.settings).await?,
        };
        let limits = &pool.settings;
        match timeout(limits.timeout, worker.call(&request)).await {
            Ok(Ok(answer)) => {
                pool.idle.lock().expect("idle workers lock").push(worker);
                let answer: Result<Value, TemplateError> = serde_json::from_slice(&answer)
                    .map_err(|e| unavailable(&format!("unreadable answer: {e}")))?;
                Ok(answer?)
            }
            Ok(Err(_)) => Err(worker.died(limits).await),
            Err(_) => {
                worker.kill();
                let limit = format!("over {} ms", limits.timeout.as_millis());
                Err(TemplateError::too_much_work(&limit).into())
            }
        }
    }
}

/// Runs a cheap render in this process. `None` if it panicked: a worker, where a panic ends
/// only that worker, then runs it again and answers for it.
fn in_process<T>(render: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(render)).ok()
}

fn unavailable(why: &str) -> SandboxError {
    SandboxError::Unavailable(why.to_string())
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    async fn start(settings: &SandboxSettings) -> Result<Worker, SandboxError> {
        let program = match &settings.program {
            Some(program) => program.clone(),
            None => std::env::current_exe()
                .map_err(|e| unavailable(&format!("cannot find this executable: {e}")))?,
        };
        let mut child = Command::new(&program)
            .args(["render-worker", "--memory-mib"])
            .arg(settings.memory_mib.to_string())
            // A template cannot read the environment, and its worker has no need of it either.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| unavailable(&format!("cannot start {}: {e}", program.display())))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(unavailable("worker started without pipes"));
        };
        let mut worker = Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        // The worker announces itself with an empty frame once its limits are in place.
        match timeout(START_WAIT, worker.read_frame()).await {
            Ok(Ok(frame)) if frame.is_empty() => Ok(worker),
            _ => {
                worker.kill();
                Err(unavailable(&format!("{} did not start", program.display())))
            }
        }
    }

    async fn call(&mut self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let len = u32::try_from(request.len()).map_err(std::io::Error::other)?;
        self.stdin.write_all(&len.to_le_bytes()).await?;
        self.stdin.write_all(request).await?;
        self.stdin.flush().await?;
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let len = self.stdout.read_u32_le().await?;
        let mut frame = vec![0; len as usize];
        self.stdout.read_exact(&mut frame).await?;
        Ok(frame)
    }

    fn kill(mut self) {
        // `kill_on_drop` would too; starting it now frees the memory sooner. Tokio reaps it.
        let _ = self.child.start_kill();
    }

    /// What a worker that stopped answering mid-render ran into: an allocation over its memory
    /// cap aborts it (SIGABRT); anything else is the node's fault, not the template's.
    async fn died(mut self, settings: &SandboxSettings) -> SandboxError {
        use std::os::unix::process::ExitStatusExt;
        let status = timeout(Duration::from_secs(1), self.child.wait()).await;
        match status {
            Ok(Ok(status)) if status.signal() == Some(6) => {
                let limit = format!("over {} MiB of memory", settings.memory_mib);
                TemplateError::too_much_work(&limit).into()
            }
            other => {
                self.kill();
                unavailable(&format!("template worker failed: {other:?}"))
            }
        }
    }
}
