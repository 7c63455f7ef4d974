//! What compiling a template costs, bounded before MiniJinja compiles it: saving and previewing
//! compile in the node, on the request's runtime thread, and a read-only key may preview.
//!
//! - **Depth** ([`check_depth`]). MiniJinja compiles (and frees) the syntax tree by recursion,
//!   and its constant folding visits each node's subtree again: `{{ x + 1 + 1 … }}` with 16,000
//!   terms (64 KiB) overflowed a runtime thread's stack, which aborts the whole node; 4,000 took
//!   0.4 s to compile. Its parser bounds nested brackets and blocks, not a chain of operators.
//!   An expression may hold at most [`MAX_OPERATORS`] operators, brackets and keywords.
//! - **Folding** ([`check_stmt`], [`check_expr`]). It folds constant expressions into one value
//!   at compile time, outside any fuel, and caps what it folds by an estimate that counts a
//!   repeated list as free (the repetition is lazy); the operations that then use it are not
//!   lazy. So `{{ ([1] * 10**8) == ([1] * 10**8) }}` compared 10^8 items while compiling (1.7 s
//!   for 10^7 in a release build). The syntax tree is read first: a constant list that would
//!   fold into more than [`MAX_FOLDED_ITEMS`] items, or be repeated a number of times this
//!   cannot tell, is refused.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::machinery::{Token, tokenize};
use minijinja::value::ValueKind;

/// Operators, brackets and keywords one expression (one `{{ }}` or `{% %}`) may hold: each may
/// add a level to its syntax tree. Real templates use a few dozen at most.
pub(super) const MAX_OPERATORS: usize = 256;

/// Items a constant list may fold into: MiniJinja's own cap on what it folds.
pub(super) const MAX_FOLDED_ITEMS: u64 = 1024;

/// What compiling would cost too much, at this 1-based line.
#[derive(Debug)]
pub(super) enum Refused {
    /// An expression with more than [`MAX_OPERATORS`] operators.
    Deep { line: usize },
    /// A constant list that would fold into more than [`MAX_FOLDED_ITEMS`] items.
    Folded { line: usize },
}

/// Refuses a template (its source, as it will be compiled) with an expression deeper than
/// [`MAX_OPERATORS`] allows. A source that does not tokenize is left for the compiler to report.
pub(super) fn check_depth(source: &str) -> Result<(), Refused> {
    let mut operators = 0;
    for token in tokenize(source, false, Default::default()) {
        let Ok((token, span)) = token else {
            return Ok(());
        };
        operators = match token {
            Token::VariableStart | Token::BlockStart => 0,
            Token::Ident(word) if !KEYWORDS.contains(&word) => continue,
            Token::TemplateData(_)
            | Token::VariableEnd
            | Token::BlockEnd
            | Token::Str(_)
            | Token::String(_)
            | Token::Int(_)
            | Token::Int128(_)
            | Token::Float(_)
            | Token::Comma
            | Token::Colon
            | Token::BracketClose
            | Token::ParenClose
            | Token::BraceClose => continue,
            _ => operators + 1,
        };
        if operators > MAX_OPERATORS {
            let line = span.start_line as usize;
            return Err(Refused::Deep { line });
        }
    }
    Ok(())
}

/// Words that join or wrap expressions.
const KEYWORDS: &[&str] = &["and", "or", "not", "in", "is", "if", "else"];

/// Checks a parsed template (`Stmt::Template`) or expression.
pub(super) fn check_stmt(stmt: &Stmt<'_>) -> Result<(), Refused> {
    let body = |stmts: &[Stmt<'_>]| stmts.iter().try_for_each(check_stmt);
    match stmt {
        Stmt::Template(t) => body(&t.children),
        Stmt::EmitExpr(e) => check_expr(&e.expr),
        Stmt::EmitRaw(_) => Ok(()),
        Stmt::ForLoop(f) => {
            exprs([&f.target, &f.iter])?;
            f.filter_expr.as_ref().map_or(Ok(()), check_expr)?;
            body(&f.body)?;
            body(&f.else_body)
        }
        Stmt::IfCond(i) => {
            check_expr(&i.expr)?;
            body(&i.true_body)?;
            body(&i.false_body)
        }
        Stmt::WithBlock(w) => {
            for (target, value) in &w.assignments {
                exprs([target, value])?;
            }
            body(&w.body)
        }
        Stmt::Set(s) => exprs([&s.target, &s.expr]),
        Stmt::SetBlock(s) => {
            check_expr(&s.target)?;
            s.filter.as_ref().map_or(Ok(()), check_expr)?;
            body(&s.body)
        }
        Stmt::AutoEscape(a) => {
            check_expr(&a.enabled)?;
            body(&a.body)
        }
        Stmt::FilterBlock(f) => {
            check_expr(&f.filter)?;
            body(&f.body)
        }
        Stmt::Block(b) => body(&b.body),
        Stmt::Import(i) => exprs([&i.expr, &i.name]),
        Stmt::FromImport(f) => {
            check_expr(&f.expr)?;
            for (name, alias) in &f.names {
                check_expr(name)?;
                alias.as_ref().map_or(Ok(()), check_expr)?;
            }
            Ok(())
        }
        Stmt::Extends(e) => check_expr(&e.name),
        Stmt::Include(i) => check_expr(&i.name),
        Stmt::Macro(m) => {
            m.args.iter().chain(&m.defaults).try_for_each(check_expr)?;
            body(&m.body)
        }
        Stmt::CallBlock(c) => {
            check_expr(&c.call.expr)?;
            args(&c.call.args)?;
            let decl = &c.macro_decl;
            decl.args
                .iter()
                .chain(&decl.defaults)
                .try_for_each(check_expr)?;
            body(&decl.body)
        }
        Stmt::Do(d) => {
            check_expr(&d.call.expr)?;
            args(&d.call.args)
        }
    }
}

/// Checks every constant expression in `expr`.
pub(super) fn check_expr(expr: &Expr<'_>) -> Result<(), Refused> {
    folded(expr).map(drop)
}

fn exprs<'a, 's: 'a>(list: impl IntoIterator<Item = &'a Expr<'s>>) -> Result<(), Refused> {
    list.into_iter().try_for_each(check_expr)
}

fn args(list: &[CallArg<'_>]) -> Result<(), Refused> {
    list.iter().try_for_each(|arg| match arg {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
            check_expr(e)
        }
    })
}

/// What a constant expression folds into, as far as sizes go.
#[derive(Clone, Copy)]
struct Folded {
    /// Items, when it is a list or tuple.
    items: Option<u64>,
    /// Its value, when it is an integer this walk can compute.
    int: Option<i64>,
}

const SCALAR: Folded = Folded {
    items: None,
    int: None,
};

/// What `expr` folds into, if MiniJinja folds it (see `Expr::as_const`: constants, lists,
/// tuples and maps of constants, unary and binary operators and comparisons of folded
/// operands); its parts are checked either way.
fn folded(expr: &Expr<'_>) -> Result<Option<Folded>, Refused> {
    let line = expr.span().start_line as usize;
    let refused = Refused::Folded { line };
    Ok(match expr {
        Expr::Const(c) => Some(match c.value.kind() {
            ValueKind::Seq => Folded {
                items: c.value.len().map(|n| n as u64),
                int: None,
            },
            ValueKind::Number => Folded {
                items: None,
                int: c.value.as_i64(),
            },
            _ => SCALAR,
        }),
        Expr::List(l) => items(&l.items)?,
        Expr::Tuple(t) => items(&t.items)?,
        Expr::Map(m) => {
            let parts = m.keys.iter().chain(&m.values);
            let all = all_folded(parts)?;
            all.then_some(SCALAR)
        }
        Expr::UnaryOp(u) => folded(&u.expr)?.map(|operand| match u.op {
            UnaryOpKind::Not => SCALAR,
            UnaryOpKind::Neg => Folded {
                items: None,
                int: operand.int.and_then(i64::checked_neg),
            },
        }),
        Expr::BinOp(b) => {
            let (left, right) = (folded(&b.left)?, folded(&b.right)?);
            match (left, right) {
                (Some(l), Some(r)) => Some(binop(b.op, l, r).ok_or(refused)?),
                _ => None,
            }
        }
        Expr::Compare(c) => {
            let operands = std::iter::once(&c.expr).chain(c.ops.iter().map(|op| &op.expr));
            all_folded(operands)?.then_some(SCALAR)
        }
        Expr::Var(_) => None,
        Expr::Slice(s) => {
            check_expr(&s.expr)?;
            exprs(s.start.iter().chain(&s.stop).chain(&s.step))?;
            None
        }
        Expr::IfExpr(i) => {
            exprs([&i.test_expr, &i.true_expr])?;
            i.false_expr.as_ref().map_or(Ok(()), check_expr)?;
            None
        }
        Expr::Filter(f) => {
            f.expr.as_ref().map_or(Ok(()), check_expr)?;
            args(&f.args)?;
            None
        }
        Expr::Test(t) => {
            check_expr(&t.expr)?;
            args(&t.args)?;
            None
        }
        Expr::GetAttr(g) => {
            check_expr(&g.expr)?;
            None
        }
        Expr::GetItem(g) => {
            exprs([&g.expr, &g.subscript_expr])?;
            None
        }
        Expr::Call(c) => {
            check_expr(&c.expr)?;
            args(&c.args)?;
            None
        }
    })
}

/// A list or tuple literal: folded when every item is a plain constant (as MiniJinja does).
fn items(list: &[Expr<'_>]) -> Result<Option<Folded>, Refused> {
    for item in list {
        check_expr(item)?;
    }
    let constant = list.iter().all(|item| matches!(item, Expr::Const(_)));
    Ok(constant.then_some(Folded {
        items: Some(list.len() as u64),
        int: None,
    }))
}

/// Whether every one of `parts` folds (each is checked).
fn all_folded<'a, 's: 'a>(parts: impl Iterator<Item = &'a Expr<'s>>) -> Result<bool, Refused> {
    let mut all = true;
    for part in parts {
        all &= folded(part)?.is_some();
    }
    Ok(all)
}

/// `l op r` folded, or `None` when it would be a list too long to fold.
fn binop(op: BinOpKind, l: Folded, r: Folded) -> Option<Folded> {
    let within = |items: u64| (items <= MAX_FOLDED_ITEMS).then_some(items);
    let ints = l.int.zip(r.int);
    Some(match op {
        BinOpKind::Mul => match (l.items, r.items) {
            (Some(items), _) | (_, Some(items)) => {
                let times = if l.items.is_some() { r.int } else { l.int };
                let times = u64::try_from(times?.max(0)).ok()?;
                Folded {
                    items: Some(within(items.checked_mul(times)?)?),
                    int: None,
                }
            }
            _ => Folded {
                items: None,
                int: ints.and_then(|(a, b)| a.checked_mul(b)),
            },
        },
        BinOpKind::Add => match (l.items, r.items) {
            (Some(a), Some(b)) => Folded {
                items: Some(within(a + b)?),
                int: None,
            },
            _ => Folded {
                items: None,
                int: ints.and_then(|(a, b)| a.checked_add(b)),
            },
        },
        BinOpKind::Sub => Folded {
            items: None,
            int: ints.and_then(|(a, b)| a.checked_sub(b)),
        },
        BinOpKind::Pow => Folded {
            items: None,
            int: ints.and_then(|(a, b)| a.checked_pow(u32::try_from(b).ok()?)),
        },
        // `and` / `or` fold into one of their operands.
        BinOpKind::ScAnd | BinOpKind::ScOr => Folded {
            items: l.items.max(r.items),
            int: None,
        },
        _ => SCALAR,
    })
}
