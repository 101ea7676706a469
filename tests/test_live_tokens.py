"""The notebook run view shows a running generation's text growing as its provider streams it."""

from __future__ import annotations

from openai_stub_server import SSEReply, StubServer, sse_chunks

import sibyl_nb as sb
from sibyl_nb.notebook.live import RunView

DOC = """
providers:
  primary: {{kind: openai_compatible, base_url: "{url}", model: stub-model, max_retries: 0}}
pipelines:
  gen:
    steps:
      - {{name: respond, use: ai_generation.generation}}
"""


def test_the_running_row_shows_the_streamed_text_growing_then_the_final_output():
    deltas = ["Python ", "is used ", "for web ", "and data."]
    with StubServer() as stub:
        stub.script(
            SSEReply(
                sse_chunks(deltas, usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}),
                delay=0.01,
            )
        )
        pipe = sb.Pipeline.from_yaml(DOC.format(url=stub.url))
        view = RunView(pipe.graph, pipe.name)
        seen: list[tuple[str, str]] = []

        def watch(ev):
            view(ev)
            if ev.kind == "token":
                row = next(r for r in view.snapshot()["rows"] if r["node_id"] == "respond")
                seen.append((row["status"], row["output"]["text"]))

        watch.wants_tokens = True
        result = pipe.run({"query": "What is Python used for?"}, observers=[watch])
        assert stub.requests[-1].body["stream"] is True
    assert [text for _, text in seen] == [
        "Python ",
        "Python is used ",
        "Python is used for web ",
        "Python is used for web and data.",
    ]
    assert {status for status, _ in seen} == {"running"}
    final = next(r for r in view.snapshot()["rows"] if r["node_id"] == "respond")
    assert final["status"] == "ran" and final["output"]["text"] == result.output["text"] == "".join(deltas)
