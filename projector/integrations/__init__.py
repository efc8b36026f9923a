"""Adapters that let other frameworks keep their history in the journal (each an optional
extra, imported by its own module only).

``agents`` is the OpenAI Agents SDK's session memory on the log
(``pip install 'session-journal[agents]'``); ``import projector`` never imports it.
"""
