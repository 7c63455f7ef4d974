//! What rendering a template costs, when that is known before it runs: the node renders such a
//! template itself instead of sending it to a worker process (`crate::sandbox`). A template's
//! instructions, read once at compile, say whether its work is bounded by the size of its
//! context ([`bounded_cost`]); its context's size, at each render, says whether that bound is
//! small ([`Cost::allows`]).

use minijinja::Environment;
use minijinja::machinery::Instruction;
use minijinja::value::{Value as MjValue, ValueKind};
use serde_json::Value;

use super::numbered;

/// Work one render may do in the node's own process (see `Template::is_cheap_for`), in bytes
/// read or written: about a millisecond.
pub(super) const CHEAP_WORK_BYTES: u64 = 1024 * 1024;

/// What a render can cost, known before it runs (see [`bounded_cost`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Cost {
    /// Passes over a value: filter and test calls, and one per template for its output.
    passes: u64,
    /// How many times larger than its input a value can become through the filters applied
    /// to it (all of them, as if chained).
    growth: u64,
    /// Bytes of the template's own source, which holds the literals a filter may return.
    own: u64,
}

impl Cost {
    /// An object template before its leaves are counted.
    pub(super) const NOTHING: Cost = Cost {
        passes: 0,
        growth: 1,
        own: 0,
    };

    /// Both renders, one after the other (their source is counted once, by [`Cost::over`]).
    pub(super) fn and(self, other: Cost) -> Cost {
        Cost {
            passes: self.passes.saturating_add(other.passes),
            growth: self.growth.max(other.growth),
            ..self
        }
    }

    /// The same, compiled from `bytes` of source in all.
    pub(super) fn over(self, bytes: usize) -> Cost {
        Cost {
            own: bytes as u64,
            ..self
        }
    }

    /// Whether a render with a context of `input` bytes stays within [`CHEAP_WORK_BYTES`].
    pub(super) fn allows(self, input: u64) -> bool {
        let work = (input.saturating_add(self.own))
            .saturating_mul(self.growth)
            .saturating_mul(self.passes);
        work <= CHEAP_WORK_BYTES
    }
}

/// Filters whose work is one pass over their input, with how many times larger than the input
/// their output can be (`upper`: `ß` becomes `SS`, and a few letters grow to 3 bytes; `tojson`
/// and `escape`: a character to a 6-byte escape; `string`: a control character to `\u{1f}`).
/// `join`, `replace`, `indent` and friends are missing on purpose: their output grows with an
/// argument, not only with their input.
const FILTER_GROWTH: &[(&str, u64)] = &[
    ("default", 1),
    ("d", 1),
    ("trim", 1),
    ("lower", 3),
    ("upper", 3),
    ("title", 3),
    ("capitalize", 3),
    ("length", 1),
    ("count", 1),
    ("first", 1),
    ("last", 1),
    ("int", 1),
    ("float", 1),
    ("abs", 1),
    ("bool", 1),
    ("safe", 1),
    ("urlencode", 3),
    ("escape", 6),
    ("e", 6),
    ("tojson", 6),
    ("string", 10),
];

/// Tests that look at a value once.
const BOUNDED_TESTS: &[&str] = &[
    "defined",
    "undefined",
    "none",
    "true",
    "false",
    "boolean",
    "string",
    "number",
    "integer",
    "float",
    "mapping",
    "sequence",
    "odd",
    "even",
    "eq",
    "ne",
    "startingwith",
    "endingwith",
    "containing",
];

/// The cost of the compiled template `name`, when its work is bounded by the size of its
/// context: every instruction runs at most once (every jump goes forward, so no loops) and
/// does work linear in its operands. No arithmetic or concatenation (`[x] * n` builds a lazy
/// sequence that costs far more than its fuel, `~` chained through `set` doubles a value at
/// each step), no calls or methods, no `set`, macros, blocks or includes, and only the filters
/// and tests listed above. Constants are no larger than the source spells out: the compiler
/// folds constant expressions, a lazy `[1] * 100000000` among them, into one `LoadConst`.
/// `None`: only a worker process can bound it (`crate::sandbox`).
pub(super) fn bounded_cost(
    env: &Environment<'static>,
    name: &str,
    source_len: usize,
) -> Option<Cost> {
    use minijinja::machinery::get_compiled_template;
    let template = env.get_template(name).ok()?;
    let compiled = get_compiled_template(&template);
    if !compiled.blocks.is_empty() {
        return None;
    }
    let mut cost = Cost {
        passes: 1,
        ..Cost::NOTHING
    };
    // What the template's constants may hold in all: what its source spells out.
    let mut constants = source_len as u64;
    for (_, at, instr) in numbered(&compiled.instructions) {
        match instr {
            Instruction::EmitRaw(_)
            | Instruction::Emit
            | Instruction::Lookup(_)
            | Instruction::GetAttr(_)
            | Instruction::GetItem
            | Instruction::DiscardTop
            | Instruction::DupTop
            | Instruction::Eq
            | Instruction::Ne
            | Instruction::Gt
            | Instruction::Gte
            | Instruction::Lt
            | Instruction::Lte
            | Instruction::Not
            | Instruction::In => {}
            Instruction::Jump(to)
            | Instruction::JumpIfFalse(to)
            | Instruction::JumpIfFalseOrPop(to)
            | Instruction::JumpIfTrueOrPop(to)
                if *to > at => {}
            Instruction::LoadConst(value) if spelled_out(value, &mut constants) => {}
            Instruction::ApplyFilter(filter, ..) => {
                let (_, growth) = FILTER_GROWTH.iter().find(|(f, _)| f == filter)?;
                cost.growth = cost.growth.saturating_mul(*growth);
                cost.passes += 1;
            }
            Instruction::PerformTest(test, ..) if BOUNDED_TESTS.contains(test) => {
                cost.passes += 1;
            }
            _ => return None,
        }
    }
    Some(cost)
}

/// Whether `value` is a constant no larger than `left` (bytes of strings, items of lists and
/// maps), which it then takes from `left`. A lazy sequence or any other object is not.
fn spelled_out(value: &MjValue, left: &mut u64) -> bool {
    let size = match value.kind() {
        ValueKind::Undefined | ValueKind::None | ValueKind::Bool | ValueKind::Number => 1,
        ValueKind::String => value.as_str().map_or(u64::MAX, |s| s.len() as u64),
        ValueKind::Seq | ValueKind::Map => match value.len() {
            Some(len) if (len as u64) <= *left => len as u64,
            _ => return false,
        },
        _ => return false,
    };
    let Some(rest) = left.checked_sub(size) else {
        return false;
    };
    *left = rest;
    match value.kind() {
        ValueKind::Seq => value
            .try_iter()
            .is_ok_and(|mut items| items.all(|item| spelled_out(&item, left))),
        ValueKind::Map => value.try_iter().is_ok_and(|mut keys| {
            keys.all(|key| {
                let item = value.get_item(&key).unwrap_or_default();
                spelled_out(&key, left) && spelled_out(&item, left)
            })
        }),
        _ => true,
    }
}

/// The size of `value` as JSON text, roughly, counted until it passes `limit`: what a render
/// reads when given it as context.
pub(super) fn weight(value: &Value, limit: u64) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        total += match value {
            Value::String(s) => s.len() as u64 + 2,
            Value::Array(items) => {
                pending.extend(items);
                2
            }
            Value::Object(map) => {
                for (key, item) in map {
                    total += key.len() as u64 + 4;
                    pending.push(item);
                }
                2
            }
            _ => 8,
        };
        if total > limit {
            break;
        }
    }
    total
}
