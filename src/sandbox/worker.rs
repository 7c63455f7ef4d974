//! The worker side of the sandbox: `hookd render-worker` reads render requests on stdin and
//! answers on stdout, one at a time, until stdin closes. It runs no async runtime and touches no
//! store: it only compiles and renders.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
};

use serde::Deserialize;
use serde_json::Value;

use crate::domain::template::{Condition, Source, Template, TemplateError};

/// Compiled programs kept per worker; past this the cache starts over (compiling is cheap, and
/// a bounded cache cannot be grown by a stream of distinct templates).
const CACHE_ENTRIES: usize = 256;

#[derive(Deserialize)]
struct Request {
    source: Source,
    context: Value,
}

enum Compiled {
    Template(Template),
    Condition(Condition),
}

/// Caps the address space at what the process uses now plus `memory_mib`, then serves requests.
/// An allocation past the cap aborts the process, which the pool reports as too much work.
pub fn run(memory_mib: u64) -> anyhow::Result<()> {
    let base = current_address_space().unwrap_or(0);
    let cap = base + memory_mib * 1024 * 1024;
    rlimit::setrlimit(rlimit::Resource::AS, cap, cap)?;
    let (mut input, mut output) = (io::stdin().lock(), io::stdout().lock());
    write_frame(&mut output, b"")?;
    let mut cache: HashMap<String, Compiled> = HashMap::new();
    loop {
        let mut len = [0; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            // The node closed the pipe: it is done with this worker.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let mut frame = vec![0; u32::from_le_bytes(len) as usize];
        input.read_exact(&mut frame)?;
        let answer = match serde_json::from_slice::<Request>(&frame) {
            Ok(request) => render(&mut cache, request),
            Err(e) => Err(TemplateError {
                path: None,
                line: None,
                message: format!("unreadable render request: {e}"),
            }),
        };
        write_frame(&mut output, &serde_json::to_vec(&answer)?)?;
    }
}

fn render(cache: &mut HashMap<String, Compiled>, request: Request) -> Result<Value, TemplateError> {
    let key = serde_json::to_string(&request.source).unwrap_or_default();
    if !cache.contains_key(&key) {
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        let compiled = match &request.source {
            Source::Text(text) => Compiled::Template(Template::compile_text(text)?),
            Source::Object(object) => Compiled::Template(Template::compile_object(object)?),
            Source::Condition(rule) => Compiled::Condition(Template::compile_condition(rule)?),
        };
        cache.insert(key.clone(), compiled);
    }
    match &cache[&key] {
        Compiled::Template(template) => template.render(&request.context.into()),
        Compiled::Condition(condition) => {
            condition.matches(&request.context.into()).map(Value::Bool)
        }
    }
}

fn write_frame(output: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(io::Error::other)?;
    output.write_all(&len.to_le_bytes())?;
    output.write_all(frame)?;
    output.flush()
}

/// The process's mapped address space in bytes (`VmSize`), where `/proc` tells it.
fn current_address_space() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
