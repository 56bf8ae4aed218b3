//! Why one step of a reconcile pass failed: a compose or Engine API call, a file operation,
//! the state store. What goes into `last_error` and, for a waiting request, its answer.

use crate::lifecycle::ErrorCode;

#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub code: ErrorCode,
    pub message: String,
}

impl StepError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        Self::new(ErrorCode::DatabaseError, e.to_string())
    }
}
