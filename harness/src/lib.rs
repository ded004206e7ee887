//! kcell harness
