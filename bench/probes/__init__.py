"""Small measurements quoted in bench/changes.md and docs/ (not part of
`make bench`); each module says how to run it."""
