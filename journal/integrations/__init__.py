"""Adapters that write LLM traffic into the journal (each an optional extra).

``capture`` holds the rules every adapter shares and imports nothing beyond the journal;
``litellm`` is the one module that imports LiteLLM (``pip install 'session-journal[litellm]'``).
"""
