//! What MiniJinja computes while compiling. It folds constant expressions into one value at
//! compile time, outside any fuel, and caps what it folds by an estimate that counts a repeated
//! list as free (the repetition is lazy); the operations that then use it are not lazy. So
//! `{{ ([1] * 10**8) == ([1] * 10**8) }}` compared 10^8 items while compiling, on the thread of
//! the request that saved or previewed it (1.7 s for 10^7 in a release build: a preview, which a
//! read-only key may ask for, held a runtime thread that long). [`check`] refuses such a template
//! before MiniJinja compiles it, by reading its syntax tree: a constant list repeated or joined
//! into more than [`MAX_FOLDED_ITEMS`] items, or repeated a number of times it cannot tell.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::value::ValueKind;

/// Items a constant list may fold into: MiniJinja's own cap on what it folds.
pub(super) const MAX_FOLDED_ITEMS: u64 = 1024;

/// A constant list that would fold into too many items, at this 1-based line.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) line: usize,
}

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
                (Some(l), Some(r)) => Some(binop(b.op, l, r).ok_or(Refused { line })?),
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
