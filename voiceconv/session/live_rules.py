"""What voiceconv assumes about GPT-Live where ``openai.types.live`` leaves behaviour open.

Every such assumption of the GPT-Live backend is a constant here, with its reason; the code
that depends on one names it. Change them here and nowhere else.
"""

from __future__ import annotations

#: Transcripts are timed fragments with no turn events: two fragments of the same speaker
#: belong to one turn unless the second starts more than this many ms (session timeline) after
#: the first ended. A fragment of the other speaker always ends the open turn. 800 ms is the
#: gap pipecat groups GPT-Live fragments on.
TURN_GAP_MS = 800

#: Barge-in. The model listens while it speaks and stops itself when interrupted; no event
#: tells the client. What it had already sent and Twilio still buffers would play on, so the
#: first caller transcript fragment that arrives while assistant audio is queued at Twilio
#: clears Twilio's buffer (and the caller heard only what the marks prove). No truncate is
#: sent: the API has none, and the model keeps its own account of what was said. The stand-in
#: models this: it stops the answer the moment caller speech starts.
CLEAR_ON_CALLER_SPEECH = True

#: Pacing. Output audio is streamed at about real time (implementers report it, silence
#: included): deltas go to Twilio as they come, with no jitter buffer in front (one that
#: stretches pauses makes the reply delay grow over the call).
PASS_THROUGH_AUDIO = True

#: Audio that arrives after a barge-in cleared Twilio is the model's next words (it stopped
#: the interrupted ones itself), so it is played, as a new assistant turn.
PLAY_AUDIO_AFTER_BARGE_IN = True

#: Session timeline → call time: the timeline counts input audio from ``session.start``, so
#: timeline ms 0 is the first caller frame forwarded to the session.
TIMELINE_IS_INPUT_AUDIO = True

#: A greeting, a reprompt, the end-of-call warning and goodbye are ``session.commentary.append``
#: with no delegation (speakable context the model says in its own words). A goodbye holds the
#: hang-up until the model's next audio has played (bounded by the hang-up deadline).
SPOKEN_LINES_ARE_COMMENTARY = True

#: Key presses reach the model as ``session.instructions.append`` (developer context), since
#: a Live session takes no user text items.
DTMF_AS_INSTRUCTIONS = True

#: voiceconv's tools are function tools of a Responses delegation: the delegated model's
#: ``function_call`` arrives in ``response.event`` (``response.output_item.done``), the tool
#: runs here, its output goes back with ``response.item.create`` and one ``response.create``
#: continues the delegated response. The other two delegations cannot run a typed tool, as
#: the installed types show:
#:
#: - ``client`` (``ClientDelegationParam``: ``type`` and ``acknowledgement_delay_ms``, no
#:   tools): the session is given no tool definitions, and ``session.delegation.created`` is
#:   "metadata, not the task text" (an id and a target), so no tool name or arguments ever
#:   reach the client; it can only answer in text (commentary, thinking, instructions with the
#:   ``delegation_id``).
#: - ``decisions`` (``DecisionsDelegationConfig``: a model and ``questions``): the Decision API
#:   answers choice, predicate and score questions (``decision.completed``), not function
#:   calls.
#:
#: So an agent with tools always gets a Responses delegation (and one without tools none,
#: which the types make a client delegation: ``delegation`` omitted "selects your
#: application").
TOOLS_THROUGH_RESPONSES_DELEGATION = True

#: A client delegation (the model handing work to the application; with no tools configured
#: this is the only delegation the session has) is answered at once with silent
#: ``session.thinking.append`` for its ``delegation_id`` saying nothing runs for it, so the
#: model does not wait on work that will never come and carries on with the caller.
CLIENT_DELEGATION_DECLINED = True
CLIENT_DELEGATION_REPLY = (
    "No task runs for this request: this agent has no tools for it. Carry on with the caller "
    "without it, and say plainly what you cannot do."
)

#: The opening clip (``session.output_audio.fixture.play``): PCM16 at 24 kHz whatever the
#: session's format; the service interrupts the model, mutes the caller's input until the clip
#: has drained (input meanwhile is dropped, so the caller cannot barge in on it) and rejects
#: commentary and instructions meanwhile. So the greeting, spoken lines and key presses wait
#: for ``session.output_audio.fixture.played`` (matched by the play's ``event_id``; an error
#: for it ends the wait too). Its audio reaches us as ordinary output deltas, recorded as an
#: assistant turn with the clip's words. ``.played`` is the server's mixer draining, not the
#: caller hearing it: Twilio's marks say what was heard.
HOLD_DURING_CLIP = True

#: After the clip, its words (when configured) go to the model as
#: ``session.instructions.append``, as the types advise for external audio ("describe content
#: already delivered so the assistant does not repeat it").
CLIP_DESCRIBED_TO_MODEL = True

#: ``session.usage.updated`` and ``session.closed`` report cumulative billable seconds ("do not
#: sum"): the call keeps the largest value seen.
USAGE_IS_CUMULATIVE = True

#: Cost. ``SessionUsage.seconds`` is the billable total; when the service splits it (the types
#: say eligible WebRTC sessions do), ``paused_seconds`` are billed at the paused (standby) rate
#: and ``active_seconds`` (the rest, which the types define as what remains) at the active rate.
#: Without the split every second is priced active. Prices: ``voiceconv.pricing``.
PAUSED_SECONDS_AT_PAUSED_RATE = True

#: A Live session that drops mid-call is replaced by a new one whose ``session.start`` carries
#: the conversation so far as text ``input`` items (at most this many, the newest).
MAX_INITIAL_ITEMS = 128

#: ``session.update`` may change only the delegation settings and the Decisions triggers
#: (``SessionUpdateConfigParam``); model, instructions, voice and audio format are fixed by
#: ``session.start``. So voiceconv sends no ``session.update``: an agent's changes apply to its
#: next call, and instructions added mid-call go in as ``session.instructions.append``.
SESSION_UPDATE_CHANGES_ONLY_DELEGATION = True

#: Time to first audio per turn. GPT-Live has no ``speech_stopped``: its caller transcript is
#: timed fragments that arrive as the caller speaks. The caller counts as having stopped when
#: the last caller fragment before the answer's first audio was received (each fragment moves
#: the moment on), so the model's share runs from that fragment to the answer's first delta,
#: and the bridge's share from that delta to its send to Twilio, as on Realtime. The
#: fragments' own ``end_ms`` (session timeline) times the latency on the call clock instead.
CALLER_STOPPED_IS_LAST_FRAGMENT = True
