"""The Telegram bot: guided capture, results, languages, worker and campaign modes.

`hbscreen.bot.standin` holds a local stand-in for the Telegram Bot API (tests and
`hbscreen demo-chat`); `hbscreen.bot.demo` runs the whole product against it in one process.
"""
