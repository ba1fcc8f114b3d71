//! One exhaustive reading of regorus's VM instructions, for every check and rewrite regate
//! makes of a compiled program (`bytecode_errors`, `undefined_bindings`). Each instruction is
//! named once, here: a regorus release that adds one fails to compile until it is classified,
//! instead of passing some scan unexamined.

use regorus::rvm::Instruction;

/// What regate's program scans need to know of one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `dest` := a literal of the program.
    Load { dest: u8, literal: u16 },
    /// `dest` := `src`.
    Move { dest: u8, src: u8 },
    /// Arithmetic, which raises an error on operands that are not numbers (or a zero divisor
    /// when it `divides`): an error a rule body swallows on the VM.
    Arithmetic {
        dest: u8,
        left: u8,
        right: u8,
        divides: bool,
    },
    /// `dest` := a number, with no error of its own (`count`).
    Count { dest: u8 },
    /// A builtin call; its destination is in its parameters.
    BuiltinCall { params: u16 },
    /// A user function call; its destination is in its parameters.
    FunctionCall { params: u16 },
    /// Writes `dest` and no other register, never jumps, and raises no error a rule body
    /// swallows where the interpreter reports one (loads, comparisons, which are not strict and
    /// order values as OPA does, lookups, rule calls).
    Writes { dest: u8 },
    /// Fails the body or returns, writes nothing, and is never a jump's target.
    Condition,
    /// Jumps (its program counters are renumbered by `undefined_bindings`).
    LoopNext,
    /// Anything else regate's scans do not follow (collection building, rule and loop
    /// boundaries, guards): it may jump, be jumped to, or write several registers, but raises
    /// no error of its own that a rule body swallows.
    Other,
    /// Host calls and Azure Policy conditions: never emitted for Rego, and not examined.
    /// `jumps`: it holds program counters.
    Foreign { jumps: bool },
}

impl Class {
    /// Whether the instruction itself holds program counters.
    pub(crate) fn jumps(self) -> bool {
        match self {
            Class::LoopNext => true,
            Class::Foreign { jumps } => jumps,
            Class::Load { .. }
            | Class::Move { .. }
            | Class::Arithmetic { .. }
            | Class::Count { .. }
            | Class::BuiltinCall { .. }
            | Class::FunctionCall { .. }
            | Class::Writes { .. }
            | Class::Condition
            | Class::Other => false,
        }
    }
}

/// The [`Class`] of `instruction`.
pub(crate) fn classify(instruction: &Instruction) -> Class {
    match *instruction {
        Instruction::Load { dest, literal_idx } => Class::Load {
            dest,
            literal: literal_idx,
        },
        Instruction::Move { dest, src } => Class::Move { dest, src },
        Instruction::Add { dest, left, right }
        | Instruction::Sub { dest, left, right }
        | Instruction::Mul { dest, left, right } => Class::Arithmetic {
            dest,
            left,
            right,
            divides: false,
        },
        Instruction::Div { dest, left, right } | Instruction::Mod { dest, left, right } => {
            Class::Arithmetic {
                dest,
                left,
                right,
                divides: true,
            }
        }
        Instruction::Count { dest, .. } => Class::Count { dest },
        Instruction::BuiltinCall { params_index } => Class::BuiltinCall {
            params: params_index,
        },
        Instruction::FunctionCall { params_index } => Class::FunctionCall {
            params: params_index,
        },
        Instruction::LoadTrue { dest }
        | Instruction::LoadFalse { dest }
        | Instruction::LoadNull { dest }
        | Instruction::LoadBool { dest, .. }
        | Instruction::LoadData { dest }
        | Instruction::LoadInput { dest }
        | Instruction::LoadContext { dest }
        | Instruction::LoadMetadata { dest }
        | Instruction::Eq { dest, .. }
        | Instruction::Ne { dest, .. }
        | Instruction::Lt { dest, .. }
        | Instruction::Le { dest, .. }
        | Instruction::Gt { dest, .. }
        | Instruction::Ge { dest, .. }
        | Instruction::And { dest, .. }
        | Instruction::Or { dest, .. }
        | Instruction::Not { dest, .. }
        | Instruction::Index { dest, .. }
        | Instruction::IndexLiteral { dest, .. }
        | Instruction::Contains { dest, .. }
        | Instruction::CallRule { dest, .. } => Class::Writes { dest },
        Instruction::AssertEq { .. } | Instruction::ReturnUndefinedIfNotTrue { .. } => {
            Class::Condition
        }
        Instruction::LoopNext { .. } => Class::LoopNext,
        Instruction::Return { .. }
        | Instruction::ObjectSet { .. }
        | Instruction::ObjectCreate { .. }
        | Instruction::ChainedIndex { .. }
        | Instruction::ArrayNew { .. }
        | Instruction::ArrayPush { .. }
        | Instruction::ArrayPushDefined { .. }
        | Instruction::ArrayCreate { .. }
        | Instruction::SetNew { .. }
        | Instruction::SetAdd { .. }
        | Instruction::SetCreate { .. }
        | Instruction::Guard { .. }
        | Instruction::CoalesceUndefinedToNull { .. }
        | Instruction::LoopStart { .. }
        | Instruction::RuleInit { .. }
        | Instruction::VirtualDataDocumentLookup { .. }
        | Instruction::DestructuringSuccess {}
        | Instruction::RuleReturn {}
        | Instruction::Halt {}
        | Instruction::ComprehensionBegin { .. }
        | Instruction::ComprehensionYield { .. }
        | Instruction::ComprehensionEnd {} => Class::Other,
        Instruction::HostAwait { .. }
        | Instruction::PolicyCondition { .. }
        | Instruction::LogicalBlockEnd { .. } => Class::Foreign { jumps: false },
        Instruction::LogicalBlockStart { .. }
        | Instruction::AllOfNext { .. }
        | Instruction::AnyOfNext { .. } => Class::Foreign { jumps: true },
    }
}
