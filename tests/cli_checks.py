"""Checks shared by the CLI tests of several families."""


def one_line_error(res, *needles):
    """A user mistake: non-zero exit, no traceback, one line naming each of `needles`."""
    assert res.exit_code != 0, res.output
    out = res.output.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    for n in needles:
        assert n in out, out
