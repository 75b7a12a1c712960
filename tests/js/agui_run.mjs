// The AG-UI client (`HttpAgent`) against the server: `BASE THREAD_ID RUN_ID TEXT` runs the agent and
// prints one JSON line per event as it arrives ({"event": type}; {"run_error": ...} for RUN_ERROR),
// then {"messages": ..., "result": ..., "custom": [...]} (what the client built) or {"error": message}.
import { HttpAgent } from "@ag-ui/client";

const [base, threadId, runId, text] = process.argv.slice(2);
const token = process.env.CHECK_TOKEN;
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const agent = new HttpAgent({
  url: `${base}/ag-ui`,
  threadId,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
agent.messages = [{ id: "u1", role: "user", content: text }];
const custom = [];
try {
  const outcome = await agent.runAgent(
    { runId },
    {
      onEvent: ({ event }) => print({ event: event.type }),
      onCustomEvent: ({ event }) => custom.push({ name: event.name, value: event.value }),
      onRunErrorEvent: ({ event }) => print({ run_error: event.message, code: event.code ?? null }),
    },
  );
  print({ messages: agent.messages, result: outcome.result ?? null, custom });
} catch (error) {
  print({ error: String(error?.message ?? error), custom });
}
