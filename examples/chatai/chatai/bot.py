"""The ChatAI Telegram bot (aiogram 3): ``BOT_TOKEN=... python -m chatai.bot``.

Configured the worker way (one import), then one line instruments the
dispatcher: every update gets a span ``telegram <type>`` with the user and chat
ids, its log lines carry them, and the AI reply inside shows up as a
``chat chatai-local-small`` child span with its tokens and cost.

``TELEGRAM_API_URL`` points the bot at another Bot API server (a local
``telegram-bot-api``, or the stand-in the tests use); by default it talks to
api.telegram.org.
"""

import chatai_otel.setup  # noqa: F401, I001  (first: configures traces, metrics and logs)

import asyncio
import os
import sys

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from chatai import ai
from chatai_otel import EventType, get_logger
from chatai_otel.tracking import events
from chatai_otel.integrations.telegram_bot import instrument_dispatcher

log = get_logger("chatai.bot")
router = Router(name="chatai")


@router.message(CommandStart())
async def start(message: Message) -> None:
    events.emit(EventType.USER_LOGIN, data={"channel": "telegram"})
    await message.answer("Hi! I am the ChatAI assistant. Ask me anything; /help for more.")


@router.message(Command("help"))
async def help_command(message: Message) -> None:
    await message.answer("Write a question and I will answer. /start to begin again.")


@router.message(F.text)
async def question(message: Message) -> None:
    """A user question: the same (stand-in) model the backend uses answers it."""
    text = message.text or ""
    events.emit(EventType.MESSAGE_SENT, data={"length": len(text), "channel": "telegram"})
    answer = await ai.reply(text, [])
    log.info("bot.replied", output_tokens=answer.output_tokens)
    await message.answer(answer.text)


def build_dispatcher(*first: Router) -> Dispatcher:
    """The bot's dispatcher; ``first`` routers (if any) get each update before ours."""
    dispatcher = Dispatcher()
    for extra in first:
        dispatcher.include_router(extra)
    dispatcher.include_router(router)
    instrument_dispatcher(dispatcher)  # one span, log line and metric point per update
    return dispatcher


def build_bot(token: str, api_url: str | None = None) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url)) if api_url else None
    return Bot(token=token, session=session)


async def main() -> int:
    token = os.environ.get("BOT_TOKEN")
    if not token:
        print("chatai.bot: set BOT_TOKEN (from @BotFather)")
        return 2
    bot = build_bot(token, os.environ.get("TELEGRAM_API_URL"))
    await build_dispatcher().start_polling(bot)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
