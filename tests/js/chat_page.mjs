// Bundled for the browser by bundle.mjs: a chat page's use of the Vercel AI SDK, on window.chat.
import { DefaultChatTransport, readUIMessageStream } from "ai";

window.chat = {
  // Send `text` to the chat and call `show(message)` with each snapshot of the answer the SDK builds.
  async send(base, chatId, text, show) {
    const transport = new DefaultChatTransport({ api: `${base}/vercel-ai` });
    const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text }] }];
    const stream = await transport.sendMessages({
      trigger: "submit-message", chatId, messageId: undefined, messages, abortSignal: undefined,
    });
    for await (const message of readUIMessageStream({ stream })) show(message);
  },
  // Reconnect as `useChat({ resume: true })` does; false when the chat has no running stream.
  async resume(base, chatId, show) {
    const transport = new DefaultChatTransport({ api: `${base}/vercel-ai` });
    const stream = await transport.reconnectToStream({ chatId });
    if (stream === null) return false;
    for await (const message of readUIMessageStream({ stream })) show(message);
    return true;
  },
};
