"""Every place pacs2xnat reaches into a library's private parts, one small module each.

Nothing else in ``connectors`` touches a private attribute. ``tests/seams/`` checks each one
against the installed library, so an upgrade that changes them fails loudly in CI instead of
quietly slowing a retrieve down or leaving the warehouse file locked.
"""
