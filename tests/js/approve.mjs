// A person answers a tool approval through the protocols' own clients.
//   vercel BASE CHAT_ID TEXT DECISION: the AI SDK's chat (`AbstractChat` with `DefaultChatTransport`, as
//     `useChat` runs it) sends TEXT, answers the approval request with `addToolApprovalResponse` and sends
//     the answer on by itself (`lastAssistantMessageIsCompleteWithApprovalResponses`).
//   agui BASE THREAD_ID TEXT DECISION: `HttpAgent` runs, reads `pendingInterrupts`, resumes with
//     `buildResumeArray`.
// DECISION is `approve` or `deny:REASON`. Prints {"asked": ...} when asked, then {"messages": ...}.
import { AbstractChat, DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const [protocol, base, conversation, text, decision] = process.argv.slice(2);
const approved = decision === "approve";
const reason = approved ? undefined : decision.replace(/^deny:/, "");
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

class State {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage(message) {
    this.messages = [...this.messages, message];
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

class Chat extends AbstractChat {}

async function vercel() {
  let finished = 0;
  let second;
  const done = new Promise((resolve) => (second = resolve));
  const chat = new Chat({
    id: conversation,
    state: new State(),
    transport: new DefaultChatTransport({ api: `${base}/vercel-ai` }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    onError: (error) => print({ error: String(error?.message ?? error) }),
    onFinish: () => {
      finished += 1;
      if (finished === 2) second();
    },
  });
  await chat.sendMessage({ text });
  const parts = chat.messages.at(-1).parts.filter((part) => part.state === "approval-requested");
  print({ asked: parts.map((part) => ({ type: part.type, input: part.input, approval: part.approval })) });
  await chat.addToolApprovalResponse({ id: parts[0].approval.id, approved, reason });
  await done;
  print({ messages: chat.messages });
}

async function agui() {
  const agent = new HttpAgent({ url: `${base}/ag-ui`, threadId: conversation });
  agent.messages = [{ id: "u1", role: "user", content: text }];
  await agent.runAgent({ runId: "run-1" });
  const interrupts = agent.pendingInterrupts;
  print({ asked: interrupts });
  const payload = approved ? { approved: true } : { approved: false, reason };
  const resume = buildResumeArray(interrupts, { [interrupts[0].id]: { status: "resolved", payload } });
  await agent.runAgent({ runId: "run-2", resume });
  print({ messages: agent.messages, pending: agent.pendingInterrupts });
}

await (protocol === "vercel" ? vercel() : agui());
