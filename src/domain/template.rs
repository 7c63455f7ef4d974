//! User-written Jinja2 (MiniJinja) templates that reshape webhook payloads.
//!
//! Owns compiling (at save time, with line-numbered errors), rendering (per
//! request, under hard limits on work and output size), routing conditions,
//! and the standard rendering context. Nothing here is HTML: auto-escaping is
//! always off.

mod compiling;
mod context;
mod cost;

use std::{fmt, io, sync::Arc};

use minijinja::machinery::Instruction;
use minijinja::value::{Kwargs, Value as MjValue, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use context::Context;
use cost::{Cost, bounded_cost};

/// Largest accepted template source (object templates: all leaves together).
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Largest output one render may produce (object templates: all leaves together).
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Work budget of one render (MiniJinja fuel: ~1 per instruction or per 64
/// bytes of data, so also ~6 MB of memory at most). A loop with a typical body
/// over 5000 items fits (~7000 do); a runaway nested loop runs dry in ~4 ms
/// (release build).
pub const FUEL: u64 = 100_000;

/// A template problem, at save time or at render time.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateError {
    /// Dotted path of the failing leaf of an object template (`context.email`, `items[0]`).
    pub path: Option<String>,
    /// 1-based line inside the template source, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl TemplateError {
    fn new(path: &str, line: Option<usize>, message: String) -> Self {
        let path = (!path.is_empty()).then(|| path.to_string());
        TemplateError {
            path,
            line,
            message,
        }
    }

    /// A render stopped from outside: it ran past its time or memory (see `crate::sandbox`).
    pub fn too_much_work(limit: &str) -> Self {
        Self::new("", None, format!("template does too much work ({limit})"))
    }

    fn from_jinja(path: &str, err: &Error) -> Self {
        let message = match (err.kind(), err.detail()) {
            (ErrorKind::OutOfFuel, _) => format!("template does too much work (over {FUEL} fuel)"),
            // The only writer is the output bound of `Budget::render`.
            (ErrorKind::WriteFailure, _) => format!("output larger than {MAX_OUTPUT_BYTES} bytes"),
            (_, Some(detail)) => detail.to_string(),
            (kind, None) => kind.to_string(),
        };
        Self::new(path, err.line(), message)
    }
}

/// A compiled template, cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Template(Arc<Compiled<Shape>>);

/// A compiled template or routing rule: what it was compiled from, the environment holding it,
/// and what a render can cost when that is known beforehand.
struct Compiled<S> {
    source: S,
    env: Environment<'static>,
    cost: Option<Cost>,
}

impl<S> Compiled<S> {
    fn is_cheap_for(&self, context: &Context) -> bool {
        (self.cost).is_some_and(|cost| cost.allows(context.weight()))
    }
}

/// The source as the user wrote it. The environment holds it compiled: a text
/// template as `0`, object leaves as `0`, `1`, … in [`for_each_leaf`] order.
enum Shape {
    Text(String),
    Object(Value),
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Template");
        match &self.0.source {
            Shape::Text(source) => d.field("text", source),
            Shape::Object(source) => d.field("object", source),
        };
        d.finish()
    }
}

/// What a template or a routing rule was compiled from: enough to compile it again elsewhere
/// (a template worker process, see `crate::sandbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Text(String),
    Object(Value),
    Condition(String),
}

impl Template {
    /// A string template (`transform_template`). If its output parses as JSON
    /// (`42`, `true`, `{"a": 1}`, …) the result is that JSON value, otherwise a
    /// JSON string holding the output.
    pub fn compile_text(source: &str) -> Result<Template, TemplateError> {
        let mut env = environment();
        let cost = add(&mut env, "0", source, source.len(), "")?;
        Ok(Template(Arc::new(Compiled {
            source: Shape::Text(source.to_string()),
            env,
            cost: cost.map(|cost| cost.over(source.len())),
        })))
    }

    /// An object template (`payload_transformation`): every string leaf, at
    /// any depth, is a template whose output stays a string; numbers, bools
    /// and null are kept as they are.
    pub fn compile_object(source: &Value) -> Result<Template, TemplateError> {
        let (mut env, mut skeleton, mut index, mut total) = (environment(), source.clone(), 0, 0);
        let mut cost = Some(Cost::NOTHING);
        for_each_leaf(&mut skeleton, &mut String::new(), &mut |path, leaf| {
            total += leaf.len();
            let leaf_cost = add(&mut env, &index.to_string(), leaf, total, path)?;
            cost = cost.zip(leaf_cost).map(|(all, leaf)| all.and(leaf));
            index += 1;
            Ok(())
        })?;
        Ok(Template(Arc::new(Compiled {
            source: Shape::Object(skeleton),
            env,
            cost: cost.map(|cost| cost.over(total)),
        })))
    }

    /// What this template was compiled from.
    pub fn source(&self) -> Source {
        match &self.0.source {
            Shape::Text(source) => Source::Text(source.clone()),
            Shape::Object(source) => Source::Object(source.clone()),
        }
    }

    /// Whether rendering with `context` costs so little, whatever the template does with it,
    /// that the node may run it itself rather than in a worker it can kill (`crate::sandbox`):
    /// no loops, arithmetic or filters whose output outgrows their input (see
    /// [`bounded_cost`]), and a context small enough for the filters it has.
    pub fn is_cheap_for(&self, context: &Context) -> bool {
        self.0.is_cheap_for(context)
    }

    /// Renders with `context` (see [`Context`]). In-process: user templates run
    /// through `crate::sandbox`, which calls this in a worker it can kill, or
    /// itself when [`Template::is_cheap_for`] says so.
    pub fn render(&self, context: &Context) -> Result<Value, TemplateError> {
        let (ctx, mut budget) = (context.jinja(), Budget::default());
        let env = &self.0.env;
        match &self.0.source {
            Shape::Text(_) => {
                let out = budget.render(env, "0", ctx, "")?;
                Ok(serde_json::from_str(&out).unwrap_or(Value::String(out)))
            }
            Shape::Object(skeleton) => {
                let (mut out, mut index) = (skeleton.clone(), 0);
                for_each_leaf(&mut out, &mut String::new(), &mut |path, leaf| {
                    *leaf = budget.render(env, &index.to_string(), ctx, path)?;
                    index += 1;
                    Ok(())
                })?;
                Ok(out)
            }
        }
    }

    /// Compiles a routing rule: a Jinja *expression* such as
    /// `priority == 'high'` or `labels contains 'urgent'`.
    pub fn compile_condition(source: &str) -> Result<Condition, TemplateError> {
        let mut env = environment();
        check_size(source.len(), "")?;
        // Parsing as a standalone expression first both gives expression-level
        // error messages and guarantees the wrapper below cannot be escaped.
        let expr = rewrite_expression(source);
        compiling::check_depth(&format!("{{{{ {expr} }}}}")).map_err(|r| too_costly(r, ""))?;
        if let Ok(tree) = minijinja::machinery::parse_expr(&expr) {
            compiling::check_expr(&tree).map_err(|refused| too_costly(refused, ""))?;
        }
        env.compile_expression(&expr)
            .map_err(|e| TemplateError::from_jinja("", &e))?;
        let wrapped = format!("{{% if ({source}) %}}1{{% endif %}}");
        let cost = add(&mut env, "0", &wrapped, source.len(), "")?;
        Ok(Condition(Arc::new(Compiled {
            source: source.to_string(),
            env,
            cost: cost.map(|cost| cost.over(source.len())),
        })))
    }
}

/// A compiled routing rule; see [`Template::compile_condition`].
#[derive(Clone)]
pub struct Condition(Arc<Compiled<String>>);

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.0.source).finish()
    }
}

impl Condition {
    /// What this rule was compiled from.
    pub fn source(&self) -> Source {
        Source::Condition(self.0.source.clone())
    }

    /// [`Template::is_cheap_for`], for a routing rule.
    pub fn is_cheap_for(&self, context: &Context) -> bool {
        self.0.is_cheap_for(context)
    }

    /// Whether the expression is truthy for `context` (Jinja truthiness).
    pub fn matches(&self, context: &Context) -> Result<bool, TemplateError> {
        let out = Budget::default().render(&self.0.env, "0", context.jinja(), "")?;
        Ok(out == "1")
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // By default names ending in `.html`/`.json` escape; output here is never HTML.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_debug(false);
    env.set_fuel(Some(FUEL));
    env.add_filter("tojson", tojson);
    env
}

/// Compiles one template source; `total` is what counts against the size limit. Its cost when
/// that is known beforehand (see [`bounded_cost`]).
fn add(
    env: &mut Environment<'static>,
    name: &str,
    source: &str,
    total: usize,
    path: &str,
) -> Result<Option<Cost>, TemplateError> {
    check_size(total, path)?;
    let source_len = source.len();
    let source = rewrite_contains(source);
    compiling::check_depth(&source).map_err(|refused| too_costly(refused, path))?;
    // A template that does not parse is left for the compiler to report.
    if let Ok(tree) = minijinja::machinery::parse(&source, name, Default::default()) {
        compiling::check_stmt(&tree).map_err(|refused| too_costly(refused, path))?;
    }
    env.add_template_owned(name.to_string(), source)
        .map_err(|e| TemplateError::from_jinja(path, &e))?;
    check_names(env, name, path)?;
    Ok(bounded_cost(env, name, source_len))
}

/// A template refused by [`compiling`] before MiniJinja would have compiled it.
fn too_costly(refused: compiling::Refused, path: &str) -> TemplateError {
    let (line, message) = match refused {
        compiling::Refused::Deep { line } => (
            line,
            format!(
                "expression too deep (over {} operators, brackets and keywords): split it with `set`",
                compiling::MAX_OPERATORS
            ),
        ),
        compiling::Refused::Folded { line } => (
            line,
            format!(
                "template does too much work (a constant list of over {} items)",
                compiling::MAX_FOLDED_ITEMS
            ),
        ),
    };
    TemplateError::new(path, Some(line), message)
}

/// Refuses a template that uses a filter, test or function that does not exist. MiniJinja looks
/// names up only when it reaches them, so without this such a template saves fine and then fails
/// every request. The compiled instructions name every filter, test and call; the machinery that
/// exposes them is unstable API, pinned by Cargo.lock.
fn check_names(env: &Environment<'static>, name: &str, path: &str) -> Result<(), TemplateError> {
    use minijinja::machinery::{Instructions, get_compiled_template};
    let template = env
        .get_template(name)
        .map_err(|e| TemplateError::from_jinja(path, &e))?;
    let compiled = get_compiled_template(&template);
    let sets: Vec<&Instructions> = std::iter::once(&compiled.instructions)
        .chain(compiled.blocks.values())
        .collect();
    // Names the template defines itself (`set`, macros, loop variables) may be called too.
    let mut own = vec!["loop", "caller", "super", "self", "varargs", "kwargs"];
    for (_, _, instr) in sets.iter().flat_map(|set| numbered(set)) {
        if let Instruction::StoreLocal(local) = instr {
            own.push(local);
        }
    }
    for (set, i, instr) in sets.iter().flat_map(|set| numbered(set)) {
        let (kind, name, known) = match instr {
            Instruction::ApplyFilter(f, ..) => {
                let known = exists(env, &format!("none | {f}"), ErrorKind::UnknownFilter);
                ("filter", f, known)
            }
            Instruction::PerformTest(t, ..) => {
                let known = exists(env, &format!("none is {t}"), ErrorKind::UnknownTest);
                ("test", t, known)
            }
            Instruction::CallFunction(f, _) => {
                let known = own.contains(f) || env.globals().any(|(global, _)| global == *f);
                ("function", f, known)
            }
            _ => continue,
        };
        if !known {
            let message = format!("unknown {kind} `{name}`");
            return Err(TemplateError::new(path, set.get_line(i), message));
        }
    }
    Ok(())
}

/// The instructions of `set` with their index.
fn numbered<'a, 's>(
    set: &'a minijinja::machinery::Instructions<'s>,
) -> impl Iterator<
    Item = (
        &'a minijinja::machinery::Instructions<'s>,
        u32,
        &'a Instruction<'s>,
    ),
> {
    (0..).map_while(move |i| set.get(i).map(|instr| (set, i, instr)))
}

/// Whether evaluating `probe` gets further than failing with `unknown`.
fn exists(env: &Environment<'static>, probe: &str, unknown: ErrorKind) -> bool {
    let outcome = env.compile_expression(probe).and_then(|e| e.eval(()));
    !outcome.is_err_and(|e| e.kind() == unknown)
}

fn check_size(total: usize, path: &str) -> Result<(), TemplateError> {
    match total > MAX_TEMPLATE_BYTES {
        true => Err(TemplateError::new(
            path,
            None,
            format!("template larger than {MAX_TEMPLATE_BYTES} bytes"),
        )),
        false => Ok(()),
    }
}

/// Limits shared by all leaves of one render, so many leaves cannot multiply
/// them: a leaf starts only while fuel is left, so a render stays under 2 × FUEL.
#[derive(Default)]
struct Budget {
    output: usize,
    fuel: u64,
}

impl Budget {
    fn render(
        &mut self,
        env: &Environment,
        name: &str,
        ctx: &MjValue,
        path: &str,
    ) -> Result<String, TemplateError> {
        let fail = |message| Err(TemplateError::new(path, None, message));
        if self.fuel >= FUEL {
            return fail(format!("template does too much work (over {FUEL} fuel)"));
        }
        // Written through a bound, so one `{{ huge }}` stops at the limit instead of first
        // building the whole text.
        let mut out = Bounded(Vec::new(), MAX_OUTPUT_BYTES - self.output);
        let captured = env
            .get_template(name)
            .and_then(|t| t.render_captured_to(ctx.clone(), &mut out));
        let captured = captured.map_err(|e| TemplateError::from_jinja(path, &e))?;
        self.fuel += captured.state().fuel_levels().map_or(0, |(used, _)| used);
        self.output += out.0.len();
        // MiniJinja writes whole `str` pieces, so this never replaces anything.
        Ok(String::from_utf8_lossy(&out.0).into_owned())
    }
}

/// A buffer that refuses to grow past its limit.
struct Bounded(Vec<u8>, usize);

impl io::Write for &mut Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.0.len() + bytes.len() > self.1 {
            return Err(io::Error::other("output limit"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Visits string leaves in a fixed order (compile and render must agree),
/// with their dotted path.
fn for_each_leaf(
    value: &mut Value,
    path: &mut String,
    f: &mut dyn FnMut(&str, &mut String) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    let len = path.len();
    match value {
        Value::String(s) => return f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                for_each_leaf(item, path, f)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                path.push_str(if len == 0 { "" } else { "." });
                path.push_str(key);
                for_each_leaf(item, path, f)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Values `tojson` visits at most: a value with more nodes than half the output limit in bytes
/// could not be printed within it, and a lazy `[x] * n` would otherwise be walked (and copied)
/// in full before any limit applied.
const TOJSON_ITEMS: usize = MAX_OUTPUT_BYTES / 2;

/// Converts for `tojson`, visiting at most `budget` values.
fn to_json(value: &MjValue, budget: &mut usize) -> Result<Value, Error> {
    *budget = budget.checked_sub(1).ok_or_else(|| {
        let detail = format!("too much work for tojson (over {TOJSON_ITEMS} items)");
        Error::new(ErrorKind::InvalidOperation, detail)
    })?;
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(value.is_true()),
        ValueKind::Number if value.is_integer() => match value.as_i64() {
            Some(i) => i.into(),
            None => u64::try_from(value.clone())?.into(),
        },
        ValueKind::Number => f64::try_from(value.clone())?.into(),
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()?
            .map(|v| to_json(&v, budget))
            .collect::<Result<_, _>>()?,
        ValueKind::Map => {
            let pairs = value
                .try_iter()?
                .map(|k| Ok((k.to_string(), to_json(&value.get_item(&k)?, budget)?)));
            Value::Object(pairs.collect::<Result<_, Error>>()?)
        }
        _ => Value::String(value.to_string()),
    })
}

/// Replaces the builtin, whose output is spaced and HTML-safe (`'` becomes
/// `\u0027`): here it lands in chat messages and JSON bodies, not HTML, so it
/// is compact and escapes only what JSON needs. Any truthy `indent` (`indent=2`,
/// `true`) pretty-prints with two spaces.
fn tojson(value: &MjValue, indent: Option<MjValue>, kwargs: Kwargs) -> Result<MjValue, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<MjValue>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let mut budget = TOJSON_ITEMS;
    let json = to_json(value, &mut budget)?;
    let text = match indent.is_some_and(|i| i.is_true()) {
        true => serde_json::to_string_pretty(&json),
        false => serde_json::to_string(&json),
    };
    text.map(MjValue::from)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

/// Rewrites GitHub-style `a contains b` into Jinja's `(b in a)` inside
/// `{{ … }}` and `{% … %}` blocks; text, comments and raw blocks are untouched.
fn rewrite_contains(src: &str) -> String {
    let (b, mut out, mut i) = (src.as_bytes(), String::with_capacity(src.len()), 0);
    while let Some(off) = src[i..].find('{') {
        let open = i + off;
        let closer = match b.get(open + 1) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                out.push_str(&src[i..=open]);
                i = open + 1;
                continue;
            }
        };
        let Some(end) = block_end(b, open + 2, closer) else {
            break;
        };
        let inner = &src[open + 2..end];
        out.push_str(&src[i..open + 2]);
        out.push_str(&if closer == "#}" {
            inner.to_string()
        } else {
            rewrite_expression(inner)
        });
        i = end;
        if closer == "%}"
            && inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) == "raw"
        {
            // Raw content is literal text: resume at the `{%` of `endraw`.
            let resume = src[i..]
                .find("endraw")
                .and_then(|e| src[..i + e].rfind("{%"));
            let stop = resume.filter(|&r| r >= i).unwrap_or(src.len());
            out.push_str(&src[i..stop]);
            i = stop;
        }
    }
    out.push_str(&src[i..]);
    out
}

/// Where the block opened before `i` ends, skipping string literals
/// (comments have none, so quotes there are plain characters).
fn block_end(b: &[u8], mut i: usize, closer: &str) -> Option<usize> {
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') if closer != "#}" => i = skip_string(b, i, q),
            _ if b[i..].starts_with(closer.as_bytes()) => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Index just past the string literal opening at `i`.
fn skip_string(b: &[u8], mut i: usize, quote: u8) -> usize {
    i += 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    (i + 1).min(b.len())
}

/// Rewrites each `a contains b` of one expression (block body) into `(b in a)`.
/// Operands are names with attributes and subscripts, or literals (`data.labels`,
/// `a['b']`, `'urgent'`, `3`); anything else is left for MiniJinja to report.
fn rewrite_expression(s: &str) -> String {
    // A copy with string bodies blanked and `[`/`]` paired up front keeps the
    // scan linear and blind to brackets or keywords inside strings.
    let (b, mut i) = (s.as_bytes(), 0);
    let (mut m, mut pair, mut open) = (b.to_vec(), vec![usize::MAX; b.len()], vec![]);
    while i < m.len() {
        match m[i] {
            q @ (b'\'' | b'"') => {
                let end = skip_string(b, i, q);
                let closed = end > i + 1 && b[end - 1] == q;
                m[i + 1..end - usize::from(closed)].fill(b'_');
                i = end - 1;
            }
            b'[' => open.push(i),
            b']' => {
                if let Some(o) = open.pop() {
                    (pair[o], pair[i]) = (i, o);
                }
            }
            _ => {}
        }
        i += 1;
    }
    let operand = |c: u8| c.is_ascii_alphanumeric() || b"_.'\"".contains(&c);
    let (mut out, mut done, mut from) = (String::with_capacity(s.len()), 0, 0);
    while let Some(at) = s[from..].find("contains").map(|x| x + from) {
        from = at + 8;
        let spaced = |x: Option<&u8>| x.is_none_or(|c| !operand(*c) && *c != b'[');
        if !spaced(at.checked_sub(1).map(|p| &m[p])) || !spaced(m.get(from)) {
            continue;
        }
        let mut l = s[..at].trim_end().len();
        let left_end = l;
        while l > 0 && (operand(m[l - 1]) || m[l - 1] == b']' && pair[l - 1] != usize::MAX) {
            l = if m[l - 1] == b']' { pair[l - 1] } else { l - 1 };
        }
        let mut r = s.len() - s[from..].trim_start().len();
        let right_start = r;
        while r < m.len() && (operand(m[r]) || m[r] == b'[' && pair[r] != usize::MAX) {
            r = if m[r] == b'[' { pair[r] + 1 } else { r + 1 };
        }
        let keyword = |w: &str| ["", "and", "or", "not", "in", "is", "if"].contains(&w);
        let (left, right) = (&s[l..left_end], &s[right_start..r]);
        if l >= done && !keyword(left) && !keyword(right) {
            out.push_str(&s[done..l]);
            out.push_str(&format!("({right} in {left})"));
            done = r;
        }
    }
    out.push_str(&s[done..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn j(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn text(src: &str, ctx: impl Into<Context<'static>>) -> Value {
        Template::compile_text(src)
            .unwrap()
            .render(&ctx.into())
            .unwrap()
    }

    fn text_err(src: &str, ctx: Value) -> TemplateError {
        Template::compile_text(src)
            .unwrap()
            .render(&ctx.into())
            .unwrap_err()
    }

    fn object(src: &str, payload: &str) -> Result<Value, TemplateError> {
        Template::compile_object(&j(src))?.render(&hook(j(payload)))
    }

    fn hook(payload: Value) -> Context<'static> {
        Context::request(
            std::borrow::Cow::Owned(payload),
            j(r#"{"x-event": "push"}"#),
            json!({}),
            j(r#"{"name": "gh"}"#),
        )
    }

    #[test]
    fn missing_values_chain_and_default() {
        let tpl = "{{ assignee.login | default('unassigned') }}";
        assert_eq!(text(tpl, json!({})), json!("unassigned"));
        assert_eq!(text("a{{ x.y }}b", json!({})), json!("ab"));
        assert_eq!(
            text("{{ v | default('d', true) }}", j(r#"{"v": null}"#)),
            json!("d")
        );
    }

    #[test]
    fn builtin_filters_without_escaping() {
        let ctx = j(r#"{"name": "ada lovelace", "items": ["a", "b"], "html": "<b>&'\""}"#);
        let tpl =
            "{{ name | title }}|{{ name | upper }}|{{ items | length }}|{{ items | join('-') }}";
        assert_eq!(
            text(tpl, ctx.clone()),
            json!("Ada Lovelace|ADA LOVELACE|2|a-b")
        );
        assert_eq!(text("{{ html }}", ctx), json!("<b>&'\""));
    }

    /// MiniJinja folds constant expressions while compiling, outside any fuel; a list it would
    /// fold past 1024 items is refused before it does (the first compared 10^8 items at save).
    #[test]
    fn constant_lists_too_long_to_fold_are_refused_at_compile() {
        let bombs = [
            "{{ ([1] * 100000000) == ([1] * 100000000) }}",
            "{{ ([1] * 10**8) ~ 'x' }}",
            "{{ 2 in [1, 2] * 1000 }}",
            "{{ x | default([0] * 100000000 == [0]) }}",
            "{% for i in [1] * 99999999 %}{% endfor %}",
            "line one\n{% if x %}{{ -([1] * (2 ** 40)) }}{% endif %}",
        ];
        for bomb in bombs {
            let error = Template::compile_text(bomb).unwrap_err();
            assert!(error.message.contains("too much work"), "{bomb}: {error}");
        }
        let error = Template::compile_text(bombs[5]).unwrap_err();
        assert_eq!(error.line, Some(2));
        let rule = Template::compile_condition("([1] * 100000000) == ([1] * 100000000)");
        assert!(rule.unwrap_err().message.contains("too much work"));
        let leaves = json!({"a": ["{{ 1 }}", "{{ [1] * 5000 }}"]});
        assert_eq!(
            Template::compile_object(&leaves)
                .unwrap_err()
                .path
                .as_deref(),
            Some("a[1]")
        );
        // Small constant lists, and lists repeated at render (under fuel, in a worker), compile.
        let fine = [
            "{{ [0] * 3 }}",
            "{{ x in ['a', 'b'] }}",
            "{{ [x] * 5000 }}",
            "{{ items * 1000 }}",
            "{{ [[1]] * 5000 }}",
            "{{ '-' * 20 }}",
            "{{ 6 * 7 }}",
            "{{ [1, 2] + [3] }}",
        ];
        for source in fine {
            assert!(Template::compile_text(source).is_ok(), "{source}");
        }
    }

    /// MiniJinja compiles by recursion over the syntax tree: an expression deep enough
    /// overflowed the stack (this one aborted the node through a preview).
    #[test]
    fn expressions_too_deep_to_compile_are_refused_before_compiling() {
        let chain = |op: &str, n: usize| format!("{{{{ x{} }}}}", op.repeat(n));
        for deep in [
            chain(" + 1", 16_000),
            chain(" | upper", 300),
            chain(".a", 300),
            chain("[0]", 300),
            format!("line\n{{% if x{} %}}y{{% endif %}}", " and x".repeat(300)),
        ] {
            let error = Template::compile_text(&deep).unwrap_err();
            assert!(error.message.contains("too deep"), "{error}");
        }
        let error = Template::compile_text(&format!("a\nb{}", chain(" ~ x", 400)));
        assert_eq!(error.unwrap_err().line, Some(2));
        let rule = Template::compile_condition(&format!("x{}", " or x".repeat(300)));
        assert!(rule.unwrap_err().message.contains("too deep"));
        // At the limit it compiles and renders, in a debug build's stack too; the limit is per
        // expression, not per template.
        let long = chain(" + 1", compiling::MAX_OPERATORS);
        let rendered = Template::compile_text(&long)
            .unwrap()
            .render(&Context::from(json!({"x": 1})));
        assert_eq!(rendered.unwrap(), json!(compiling::MAX_OPERATORS + 1));
        let many = chain(" + 1", 200).repeat(20);
        assert!(Template::compile_text(&many).is_ok());
    }

    /// Cheap: every instruction runs at most once and does work linear in its operands.
    #[test]
    fn only_templates_without_loops_arithmetic_or_growing_filters_are_cheap() {
        let small = hook(json!({"lead_name": "Ada", "items": [1, 2], "priority": "high"}));
        let cheap = [
            "plain text",
            "{{ lead_name }}",
            "{{ lead_name | default('x') | upper }}",
            "{{ data | tojson }}",
            "{% if lead_name == 'Ada' %}a{% elif items %}b{% else %}c{% endif %}",
            "{{ items[0] }} {{ headers['x-event'] }} {{ webhook.name }}",
            "{{ lead_name if lead_name is defined else 'none' }}",
            "{{ items contains 1 }}",
            "{{ lead_name in ['Ada', 'Grace'] }}",
        ];
        for source in cheap {
            let template = Template::compile_text(source).unwrap();
            assert!(template.is_cheap_for(&small), "{source}");
        }
        let costly = [
            "{% for i in items %}{{ i }}{% endfor %}",
            "{{ lead_name * 3 }}",
            "{{ lead_name ~ lead_name }}",
            "{{ items + items }}",
            "{% set x = lead_name %}{{ x }}",
            "{{ items | join(lead_name) }}",
            "{{ lead_name | replace('a', 'bb') }}",
            "{{ range(10) | length }}",
            "{% macro m() %}x{% endmacro %}{{ m() }}",
            "{{ lead_name.upper() }}",
            "{{ [lead_name, lead_name] }}",
            // Folded by the compiler into constants larger than their source.
            "{{ [1] * 1000 }}",
            "{{ 'ab' * 300 }}",
        ];
        for source in costly {
            let template = Template::compile_text(source).unwrap();
            assert!(!template.is_cheap_for(&small), "{source}");
        }
        let rule = |source| Template::compile_condition(source).unwrap();
        assert!(rule("priority == 'high' and items contains 2").is_cheap_for(&small));
        assert!(!rule("(items * 1000) | length > 3").is_cheap_for(&small));
        let object = |source| Template::compile_object(&source).unwrap();
        let leaves = json!({"a": "{{ lead_name }}", "b": ["{{ data | tojson }}", 1]});
        assert!(object(leaves).is_cheap_for(&small));
        let looping = json!({"a": "{{ lead_name }}", "b": "{% for i in items %}{% endfor %}"});
        assert!(!object(looping).is_cheap_for(&small));
    }

    /// What a cheap template may do grows with its context: past about a megabyte of work it
    /// goes to a worker like any other.
    #[test]
    fn a_context_too_large_for_its_filters_is_not_cheap() {
        let big = hook(json!({"text": "x".repeat(200 * 1024)}));
        assert!(
            Template::compile_text("{{ text }}")
                .unwrap()
                .is_cheap_for(&big)
        );
        let escaped = Template::compile_text("{{ data | tojson }}").unwrap();
        assert!(!escaped.is_cheap_for(&big));
        assert!(escaped.is_cheap_for(&hook(json!({"text": "x".repeat(1024)}))));
    }

    #[test]
    fn contains_spelling_and_in_both_work() {
        let tpl = "{% if object_type == 'issue' and labels contains 'urgent' %}high{% else %}normal{% endif %}";
        let issue = |labels: Value| text(tpl, json!({"object_type": "issue", "labels": labels}));
        assert_eq!(issue(json!(["bug", "urgent"])), json!("high"));
        assert_eq!(issue(json!(["bug"])), json!("normal"));
        assert_eq!(issue(json!("this is urgent!")), json!("high"));
        let ctx = j(r#"{"labels": ["urgent"], "a": {"b": "xyz"}, "data": {"labels": ["x"]}}"#);
        // MiniJinja prints booleans the Python way; `tojson` gives JSON spelling.
        assert_eq!(text("{{ 'urgent' in labels }}", ctx.clone()), json!("True"));
        let tpl = "{{ a['b'] contains 'y' }} {{ data.labels contains \"x\" }}";
        assert_eq!(text(tpl, ctx.clone()), json!("True True"));
        let tpl = "{{- (not labels contains 'urg')|tojson -}}";
        assert_eq!(text(tpl, ctx.clone()), json!(true));
        // Literal text, comments, strings and raw blocks keep the word as is.
        let tpl = "a contains b {{ 'x contains y' }}{# c contains d #}{% raw %}{{ e contains f }}{% endraw %}";
        assert_eq!(
            text(tpl, ctx),
            json!("a contains b x contains y{{ e contains f }}")
        );
        let cases = [
            (
                "{% if x.y[0] contains z['k'] %}",
                "{% if (z['k'] in x.y[0]) %}",
            ),
            (
                "{{ a contains 'b]' or c contains 1 }}",
                "{{ ('b]' in a) or (1 in c) }}",
            ),
            (
                "{{ x.contains }}{{ f|contains }}{{ 'é' }}",
                "{{ x.contains }}{{ f|contains }}{{ 'é' }}",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(rewrite_contains(src), want);
        }
    }

    #[test]
    fn syntax_errors_name_line_and_path() {
        let err = Template::compile_text("{{ a }}\n{{ b ").unwrap_err();
        let want = "line 2: unexpected end of input, expected end of variable block";
        assert_eq!(err.to_string(), want);
        let err = object(r#"{"context": {"email": "{{ email "}}"#, "{}").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("context.email: {}", &want.replace('2', "1"))
        );
        let err = object(r#"{"items": ["ok", "x\n{% if %}"]}"#, "{}").unwrap_err();
        assert_eq!((err.path.as_deref(), err.line), (Some("items[1]"), Some(2)));
        let big = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        let err = Template::compile_text(&big).unwrap_err();
        assert_eq!(err.to_string(), "template larger than 65536 bytes");
        let halves = json!({"a": &big[..40_000], "b": &big[..40_000]});
        let err = Template::compile_object(&halves).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("b"));
    }

    #[test]
    fn render_errors_are_clear() {
        let err = text_err("ok\n{{ name.x() }}", json!({"name": 1}));
        assert!(err.to_string().starts_with("line 2: "), "{err}");
        assert!(
            text_err("{{ 1 + 'a' }}", json!({}))
                .message
                .contains("unsupported types")
        );
        let err = text_err("{{ 'x' * 300000 }}", json!({}));
        assert_eq!(err.to_string(), "output larger than 262144 bytes");
        let err = object(
            r#"{"a": "{{ 'x' * 200000 }}", "b": ["{{ 'y' * 100000 }}"]}"#,
            "{}",
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "b[0]: output larger than 262144 bytes"
        );
    }

    #[test]
    fn fuel_stops_runaway_loops_fast_and_allows_normal_loops() {
        let items: Vec<Value> = (0..1000)
            .map(|i| json!({"id": i, "name": format!("item {i}")}))
            .collect();
        let tpl = "{% for it in items %}{% if it.id % 2 == 0 %}{{ loop.index }}:{{ it.name | upper }},{% endif %}{% endfor %}";
        let out = text(tpl, json!({ "items": items }));
        assert!(out.as_str().unwrap().ends_with("999:ITEM 998,"));
        let start = Instant::now();
        let tpl =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = text_err(tpl, json!({}));
        assert!(err.message.contains("too much work"), "{err}");
        // ~4 ms in release, ~20 ms in a debug build; slack for a loaded CI.
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        let err = text_err("{% for i in range(100000000) %}{% endfor %}", json!({}));
        assert_eq!(err.message, "range has too many elements");
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // Leaves share one budget: many heavy leaves cannot multiply it.
        let heavy = "{% for i in range(15000) %}{% endfor %}";
        let tpl = Template::compile_object(&Value::from(vec![heavy; 8])).unwrap();
        assert!(
            tpl.render(&Context::from(json!({})))
                .unwrap_err()
                .message
                .contains("too much work")
        );
    }

    #[test]
    fn echo_payload_of_any_type() {
        let payload =
            j(r#"{"text": "it's <ok>", "n": 1.5, "list": [1, null, true], "o": {"z": 1, "a": 2}}"#);
        for p in [
            payload,
            json!("plain"),
            j(r#"[1, "two", {"three": 3}]"#),
            json!(-7),
        ] {
            assert_eq!(text("{{ data | tojson }}", hook(p.clone())), p);
        }
        assert_eq!(
            text("{{ data | tojson(indent=2) }}", hook(json!([1]))),
            json!([1])
        );
        let out = text("{{ data | tojson }}", hook(j(r#"{"b": 1, "a": [2]}"#)));
        assert_eq!(out.to_string(), r#"{"b":1,"a":[2]}"#);
    }

    #[test]
    fn multi_line_text_template_becomes_json() {
        let tpl = "{\n  \"message\": \"{{ data.text }}\",\n  \"user\": \"{{ data.user.name }}\",\n  \"timestamp\": \"{{ data.created_at }}\"\n}";
        let payload = r#"{"text": "Deploy done", "user": {"name": "ada"}, "created_at": "2024-05-01T10:00:00Z"}"#;
        let want =
            r#"{"message": "Deploy done", "user": "ada", "timestamp": "2024-05-01T10:00:00Z"}"#;
        assert_eq!(text(tpl, hook(j(payload))), j(want));
    }

    #[test]
    fn unknown_filters_tests_and_functions_are_refused_at_compile() {
        let err = Template::compile_text("ok\n{{ x | nosuchfilter }}").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.message, "unknown filter `nosuchfilter`");
        let err = Template::compile_text("{% if x is nosuchtest %}{% endif %}").unwrap_err();
        assert_eq!(err.message, "unknown test `nosuchtest`");
        let err = Template::compile_text("{{ nosuchfunction(1) }}").unwrap_err();
        assert_eq!(err.message, "unknown function `nosuchfunction`");
        let err = Template::compile_condition("x | nope").unwrap_err();
        assert_eq!(err.message, "unknown filter `nope`");
        let err = Template::compile_object(&json!({"a": {"b": "{{ x | nope }}"}})).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("a.b"));
        // Builtins, ours, the template's own macros and variables, in branches never taken.
        let fine = "{% macro m(v) %}{{ v | upper }}{{ caller() if false }}{% endmacro %}\
                    {% set f = m %}{% if false %}{{ f(1) }}{{ m(x) | tojson }}{% endif %}\
                    {{ range(2) | list | length }}{{ x is defined }}{{ namespace(a=1).a }}\
                    {{ x | default('d') | title }}{% for i in [1] %}{{ loop.index }}{% endfor %}";
        assert_eq!(text(fine, json!({})), json!("2False1D1"));
    }

    #[test]
    fn plain_output_is_a_string_unless_it_parses_as_json() {
        assert_eq!(text("{{ message }}", json!({"message": "hi"})), json!("hi"));
        assert_eq!(text("{{ 40 + 2 }}", json!({})), json!(42));
        assert_eq!(text("", json!({})), json!(""));
    }

    #[test]
    fn crm_lead_object_template() {
        let tpl = r#"{"message": "New lead: {{ lead_name }} from {{ company }}", "context": {"email": "{{ email }}", "phone": "{{ phone }}", "source": "CRM System", "priority": "{{ priority | default('medium') }}"}}"#;
        let payload =
            r#"{"lead_name": "Ada", "company": "Acme", "email": "ada@acme.io", "phone": 5551234}"#;
        let want = r#"{"message": "New lead: Ada from Acme", "context": {"email": "ada@acme.io", "phone": "5551234", "source": "CRM System", "priority": "medium"}}"#;
        assert_eq!(object(tpl, payload).unwrap(), j(want));
    }

    #[test]
    fn api_object_template_keeps_non_strings() {
        let tpl = r#"{"message": "Process this data: {{ data | tojson }}", "metadata": {"source": "{{ source | default('external_api') }}", "timestamp": "{{ timestamp }}", "processed": false}, "tries": [1, null]}"#;
        let payload = r#"{"timestamp": "2024-05-01", "value": "it's"}"#;
        let want = r#"{"message": "Process this data: {\"timestamp\":\"2024-05-01\",\"value\":\"it's\"}", "metadata": {"source": "external_api", "timestamp": "2024-05-01", "processed": false}, "tries": [1, null]}"#;
        assert_eq!(object(tpl, payload).unwrap(), j(want));
    }

    #[test]
    fn github_object_template() {
        let tpl = r#"{"message": "{% if action == 'create' %}New {{ object_type }}: {{ object_name }}{% else %}{{ action | title }} {{ object_type }}: {{ object_name }}{% endif %}", "metadata": {"source": "github", "timestamp": "{{ timestamp }}", "priority": "{% if object_type == 'issue' and labels contains 'urgent' %}high{% else %}normal{% endif %}", "assignee": "{{ assignee.login | default('unassigned') }}"}, "context": {"repository": "{{ repository.full_name }}", "branch": "{{ ref | default('main') }}", "commit": "{{ head_commit.id | default('unknown') }}"}}"#;
        let full = r#"{"action": "create", "object_type": "issue", "object_name": "Crash on start", "timestamp": "t1", "labels": ["urgent"], "assignee": {"login": "ada"}, "repository": {"full_name": "acme/app"}, "ref": "dev", "head_commit": {"id": "abc123"}}"#;
        let want = r#"{"message": "New issue: Crash on start", "metadata": {"source": "github", "timestamp": "t1", "priority": "high", "assignee": "ada"}, "context": {"repository": "acme/app", "branch": "dev", "commit": "abc123"}}"#;
        assert_eq!(object(tpl, full).unwrap(), j(want));
        let bare = r#"{"action": "closed", "object_type": "pull request", "object_name": "Fix", "timestamp": "t2", "labels": [], "repository": {"full_name": "acme/app"}}"#;
        let want = r#"{"message": "Closed pull request: Fix", "metadata": {"source": "github", "timestamp": "t2", "priority": "normal", "assignee": "unassigned"}, "context": {"repository": "acme/app", "branch": "main", "commit": "unknown"}}"#;
        assert_eq!(object(tpl, bare).unwrap(), j(want));
    }

    /// A request's context, converted from its parts, reads as the same context given whole as
    /// JSON (what a template worker gets), whatever the payload's shape.
    #[test]
    fn a_request_context_reads_the_same_from_its_parts_and_as_json() {
        let payloads = [
            json!({"lead_name": "Ada", "items": [1, {"x": null}], "n": 1.5}),
            json!({"message": "m", "data": {"key": "v", "message": "inner"}}),
            json!({"data": "inner", "headers": "shadowed", "webhook": 1, "query": [2]}),
            json!([1, 2]),
            json!("text"),
            json!(null),
        ];
        let templates = [
            "{{ lead_name }} {{ items | tojson }} {{ n }}",
            "{{ data | tojson }} {{ data.key }} {{ data.message }} {{ data | length }}",
            "{{ headers | tojson }} {{ query | tojson }} {{ webhook | tojson }}",
            "{{ message }} {{ data.data | tojson }} {{ missing | default('none') }}",
        ];
        for payload in payloads {
            let parts = hook(payload);
            let whole = Context::from(parts.json().clone());
            for source in templates {
                let template = Template::compile_text(source).unwrap();
                assert_eq!(
                    template.render(&parts),
                    template.render(&whole),
                    "{source} with {}",
                    parts.json()
                );
            }
            assert!(parts.weight() >= whole.weight() / 2, "{}", parts.json());
        }
    }

    #[test]
    fn context_layout() {
        let ctx = hook(j(
            r#"{"lead_name": "Ada", "data": "inner", "headers": "shadowed"}"#,
        ));
        let tpl = "{{ lead_name }} {{ data.data }} {{ headers['x-event'] }} {{ webhook.name }} {{ query | length }}";
        assert_eq!(text(tpl, ctx), json!("Ada inner push gh 0"));
        assert_eq!(text("{{ data }}", hook(json!(42))), json!(42));
    }

    #[test]
    fn a_payloads_own_data_is_reachable_through_data() {
        // The spec's curl body.
        let body = json!({"message": "Test message", "data": {"key": "value", "message": "inner"}});
        let cases = [
            ("{{ data.key }}", json!("value")),
            ("{{ data['key'] }}", json!("value")),
            ("{{ data.message }}", json!("Test message")),
            ("{{ data.data.message }}", json!("inner")),
            ("{{ message }}", json!("Test message")),
            ("{{ data | length }}", json!(2)),
            ("{{ data.missing | default('none') }}", json!("none")),
            ("{{ data | tojson }}", body.clone()),
            (
                "{% for k in data %}{{ k }},{% endfor %}",
                json!("message,data,"),
            ),
        ];
        for (tpl, want) in cases {
            assert_eq!(text(tpl, hook(body.clone())), want, "{tpl}");
        }
        let rule = Template::compile_condition("data.key == 'value'").unwrap();
        assert!(rule.matches(&hook(body)).unwrap());
    }

    #[test]
    fn compiled_once_shared_and_debuggable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Template>();
        send_sync::<Condition>();
        let tpl = Template::compile_text("Hi {{ name }}").unwrap();
        let copy = tpl.clone();
        assert!(Arc::ptr_eq(&tpl.0, &copy.0));
        for name in ["a", "b"] {
            assert_eq!(
                copy.render(&Context::from(json!({ "name": name })))
                    .unwrap(),
                json!(format!("Hi {name}"))
            );
        }
        assert_eq!(format!("{tpl:?}"), r#"Template { text: "Hi {{ name }}" }"#);
        let obj = Template::compile_object(&json!({"a": "{{ b }}"})).unwrap();
        assert_eq!(
            format!("{obj:?}"),
            r#"Template { object: Object {"a": String("{{ b }}")} }"#
        );
    }

    #[test]
    fn conditions() {
        let high = Template::compile_condition("priority == 'high'").unwrap();
        assert!(
            high.matches(&Context::from(json!({"priority": "high"})))
                .unwrap()
        );
        assert!(!high.matches(&Context::from(json!({}))).unwrap());
        let urgent = Template::compile_condition("labels contains 'urgent' and '%}' != x").unwrap();
        assert!(
            urgent
                .matches(&Context::from(json!({"labels": ["urgent"]})))
                .unwrap()
        );
        assert!(
            !urgent
                .matches(&Context::from(json!({"labels": ["bug"]})))
                .unwrap()
        );
        assert_eq!(
            format!("{urgent:?}"),
            r#"Condition("labels contains 'urgent' and '%}' != x")"#
        );
        let err = Template::compile_condition("priority ==").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: unexpected end of input, expected expression"
        );
        assert!(Template::compile_condition("a %}{% if b").is_err());
    }
}
