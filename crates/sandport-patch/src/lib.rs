//! The verified patch engine behind `sandport patch`.
