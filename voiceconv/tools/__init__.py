"""Tools the agent can call, in five rooms.

- :mod:`~voiceconv.tools.registry`: :class:`Tool`, the ``@tool`` decorator, the registry
  (no models; ``voiceconv.models`` imports it at module level).
- :mod:`~voiceconv.tools.schema`: signature -> JSON schema, argument parsing, override checks.
- :mod:`~voiceconv.tools.runtime`: the injected context, results, execution with timeouts.
- :mod:`~voiceconv.tools.binding`: ``ToolDefinition`` rows bound to agents, sync from code
  (imports models at module level).
- :mod:`~voiceconv.tools.builtins`: ``end_call`` and ``transfer_call``.

``VoiceconvConfig.ready()`` imports every installed app's ``tools`` module, this package
included, so importing it registers the built-ins. ``from voiceconv import tool`` is the
spelling for users.
"""

from voiceconv.tools import builtins  # noqa: F401  (registers end_call and transfer_call)
