"""The standard library's private regex parser, which streams/review/sre_shim.py exposes to the rule
checks: fail loudly if a Python upgrade renames what they read."""

from streams.review import sre_shim


def test_the_private_regex_parser_still_has_what_the_rule_checks_read():
    tree = sre_shim.sre_parse.parse("(a+)+b", 0)
    assert list(tree)  # a parse tree of (opcode, argument) pairs
    for name in ("MAX_REPEAT", "MIN_REPEAT", "MAXREPEAT", "POSSESSIVE_REPEAT", "ATOMIC_GROUP", "GROUPREF",
                 "GROUPREF_EXISTS", "SUBPATTERN", "BRANCH", "ASSERT", "ASSERT_NOT", "LITERAL", "IN"):
        assert hasattr(sre_shim.sre_constants, name), f"re._constants.{name} is gone: streams/review/rules.py"
