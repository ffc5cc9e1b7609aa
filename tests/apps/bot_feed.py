"""Feeds Telegram updates to the example bot's dispatcher, with no Telegram anywhere.

Telegram's Bot API cannot run here, so a local HTTP server stands in for it
(``TELEGRAM_API_URL``): it answers ``sendMessage`` as the Bot API does and keeps
every call. The dispatcher, the middleware, the handlers and aiogram's HTTP
session are the real ones. Prints one ``CALL <json>`` line per Bot API call and
``RESULT <json>`` per update, then ``BOT-DONE``.
"""

import chatai_otel.setup  # noqa: F401, I001

import asyncio
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message, Update

from chatai.bot import build_bot, build_dispatcher

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
calls: list[dict[str, Any]] = []


class TelegramStandIn(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        fields = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
        method = self.path.rsplit("/", 1)[-1]
        calls.append({"method": method, "path_has_token": TOKEN in self.path, **fields})
        result: dict[str, Any] = {
            "message_id": len(calls),
            "date": int(time.time()),
            "chat": {"id": int(fields.get("chat_id", 0)), "type": "private"},
            "text": fields.get("text", ""),
        }
        if method == "getMe":  # aiogram asks who it is to match /command@bot_username
            result = {
                "id": 123456789,
                "is_bot": True,
                "first_name": "ChatAI",
                "username": "chatai_bot",
            }
        payload = json.dumps({"ok": True, "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


failing = Router(name="test-only")


@failing.message(Command("fail"))
async def fail(message: Message) -> None:
    raise RuntimeError("handler bug while calling the API with Bearer abcdefghijklmnop1234")


def message(update_id: int, text: str, user: int, chat: int, chat_type: str = "private") -> dict:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": chat, "type": chat_type, "title": "team"}
            if chat_type != "private"
            else {"id": chat, "type": "private", "first_name": "Ann"},
            "from": {"id": user, "is_bot": False, "first_name": "Ann"},
            "text": text,
        },
    }


async def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TelegramStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bot = build_bot(TOKEN, f"http://127.0.0.1:{server.server_address[1]}")
    dispatcher = build_dispatcher(failing)
    edited = message(4, "edited text", 111, 111)
    edited["edited_message"] = edited.pop("message")
    edited["edited_message"]["edit_date"] = int(time.time())
    updates = [
        message(1, "/start", 111, 111),
        message(2, "What is ChatAI?", 111, 111),
        message(3, "/fail", 111, 111),
        edited,  # the bot has no handler for edited messages
        message(5, "/help@chatai_bot", 222, -100123, "group"),
    ]
    for raw in updates:
        update = Update.model_validate(raw, context={"bot": bot})
        try:
            result = await dispatcher.feed_update(bot, update)
            outcome = {"update_id": raw["update_id"], "raised": None, "result": repr(result)}
        except Exception as exc:
            outcome = {"update_id": raw["update_id"], "raised": type(exc).__name__}
        print("RESULT " + json.dumps(outcome), flush=True)
    await bot.session.close()
    server.shutdown()
    for call in calls:
        print("CALL " + json.dumps(call), flush=True)
    print("BOT-DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
