"""The Telegram bot: guided capture, results, languages, worker and campaign modes.

The Bot API stand-in used by the tests and `hbscreen demo-chat` lives in `hbscreen.standin`.
"""
