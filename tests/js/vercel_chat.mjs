// The Vercel AI SDK's own chat transport against the server: `send CHAT_ID TEXT` posts a message,
// `resume CHAT_ID` reconnects as `useChat({ resume: true })` does. Prints one JSON line per chunk as it
// arrives ({"chunk": type}), then {"message": <the UIMessage the SDK built>} or {"resumed": null}.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, command, chatId, text] = process.argv.slice(2);
const token = process.env.CHECK_TOKEN;
const transport = new DefaultChatTransport({
  api: `${base}/vercel-ai`,
  headers: token ? { Authorization: `Bearer ${token}` } : undefined,
});
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

async function collect(stream) {
  const [forMessages, forChunks] = stream.tee();
  const chunks = (async () => {
    for await (const chunk of forChunks) print({ chunk: chunk.type });
  })();
  let message = null;
  for await (const snapshot of readUIMessageStream({ stream: forMessages, terminateOnError: false })) {
    message = snapshot;
  }
  await chunks;
  print({ message });
}

if (command === "send") {
  const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text }] }];
  await collect(
    await transport.sendMessages({ trigger: "submit-message", chatId, messageId: undefined, messages, abortSignal: undefined }),
  );
} else {
  const stream = await transport.reconnectToStream({ chatId });
  if (stream === null) print({ resumed: null });
  else await collect(stream);
}
