"""Queue semantics: submit, claim, lease, retry, cancel, progress; the worker loop."""
