"""The serial console's terminal model (``/dashboard/terminal.js``) in a real headless Chromium, on
a page the gateway serves: what the screen shows after a guest's output (busybox ash's line
editing among it), and the bytes sent for keys (the real guest: tests/node/test_guest_serial_console.py).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.helpers import Api

CHROMIUM = "/usr/bin/chromium"
SCREEN_AFTER = """async ([chunks, options]) => {
  const { Screen } = await import("/dashboard/terminal.js");
  const replies = [];
  const screen = new Screen({ ...options, reply: (text) => replies.push(text) });
  for (const chunk of chunks) screen.write(chunk);
  const { lines, cursor } = screen.view();
  return { lines: lines.map((line) => line.trimEnd()), cursor: [cursor.line, cursor.column], replies };
}"""
KEY_BYTES = """async (cases) => {
  const { keyBytes } = await import("/dashboard/terminal.js");
  return cases.map(([init, application]) => keyBytes(new KeyboardEvent("keydown", init), application));
}"""
PROMPT = "/ # "
ASKED = "\x1b[6n"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser, api: Api) -> AsyncIterator[Page]:
    """A document of the gateway's (its style sheet), for the module to load from the gateway's origin."""
    page = await browser.new_page()
    try:
        await page.goto(f"{api.base_url}/dashboard/style.css")
        yield page
    finally:
        await page.close()


async def screen_after(page: Page, *chunks: str, **options: int) -> dict[str, Any]:
    """What the terminal shows once ``chunks`` were written to it, one write each."""
    shown: dict[str, Any] = await page.evaluate(SCREEN_AFTER, [list(chunks), options])
    return shown


async def test_text_carriage_returns_backspaces_tabs_and_wrapping(page: Page) -> None:
    shown = await screen_after(page, "abc\r\ndef", "\r\nhello\rHE", "\r\nabc\b\bX", "\r\na\tb")
    assert shown["lines"] == ["abc", "def", "HEllo", "aXc", "a       b"]
    assert shown["cursor"] == [4, 9]
    shown = await screen_after(page, "abcdefg", columns=5)
    assert (shown["lines"], shown["cursor"]) == (["abcde", "fg"], [1, 2])
    # busybox's way to the next line at the right margin: a space, then back over it
    shown = await screen_after(page, "abcde \b", columns=5)
    assert (shown["lines"], shown["cursor"]) == (["abcde", ""], [1, 0])


async def test_colours_titles_and_other_sequences_leave_only_their_text(page: Page) -> None:
    shown = await screen_after(
        page,
        "\x1b[1;32mgreen\x1b[0m text",
        "\r\n\x1b]0;a title\x07x\x1b]2;other\x1b\\y",
        "\r\n\x1b(Bok\x1b=\x1b[?25l\x1b[?2004h\x1b[4 q\x1bPdcs\x1b\\!",
        "\r\nsp",
        "lit\x1b[",
        "1;3",
        "1mend",
    )
    assert shown["lines"] == ["green text", "xy", "ok!", "splitend"]


async def test_cursor_movement_and_erasing(page: Page) -> None:
    shown = await screen_after(page, "abcdef\x1b[3D\x1b[K", "\r\nabcdef\x1b[3D\x1b[1K", "\r\nabcdef\x1b[2K")
    assert (shown["lines"], shown["cursor"]) == (["abc", "    ef", ""], [2, 6])
    shown = await screen_after(page, "one\r\ntwo\r\nthree\x1b[2A\x1b[2Gx\x1b[3;2Hy\x1b[Bz\x1b[99C!")
    assert (shown["lines"], shown["cursor"]) == (["oxe", "two", "tyree", "  z" + " " * 76 + "!"], [3, 79])
    shown = await screen_after(page, "one\r\ntwo\r\nthree\x1b[2;2H\x1b[J")
    assert (shown["lines"], shown["cursor"]) == (["one", "t"], [1, 1])
    shown = await screen_after(page, "one\r\ntwo\r\nthree\x1b[2;2H\x1b[1J")
    assert shown["lines"] == ["", "  o", "three"]
    shown = await screen_after(page, "one\r\ntwo\x1b[2J")
    assert (shown["lines"], shown["cursor"]) == (["", ""], [1, 3])
    shown = await screen_after(
        page, "abcdef\x1b[3G\x1b[2P", "\r\nabcdef\x1b[3G\x1b[2@", "\r\nabcdef\x1b[3G\x1b[2X"
    )
    assert shown["lines"] == ["abef", "ab  cdef", "ab  ef"]
    shown = await screen_after(page, "a\r\nb\r\nc\x1b[2;1H\x1b[M", rows=4)
    assert (shown["lines"], shown["cursor"]) == (["a", "c"], [1, 0])
    shown = await screen_after(page, "a\r\nb\r\nc\x1b[2;1H\x1b[L", rows=4)
    assert shown["lines"] == ["a", "", "b", "c"]


async def test_busybox_ash_line_editing_shows_what_a_terminal_shows(page: Page) -> None:
    """The bytes busybox ash's line editing writes on a serial console (recorded from the test guest:
    history recalled with the up arrow, a character put in the middle, one rubbed out there, Ctrl-C
    during a command and at the prompt) leave the lines a terminal shows."""
    shown = await screen_after(
        page,
        PROMPT + ASKED,  # each prompt asks where the cursor is
        "echo abc",
        "\r\nabc\r\n" + PROMPT + ASKED,
        "\r" + PROMPT + "echo abc\x1b[J",  # the up arrow: the line drawn again, the rest erased
        "\b\b",  # the left arrow twice
        "X" + "bc" + "\b\b",  # X typed: the rest put again after it, the cursor back
    )
    assert shown["lines"] == ["/ # echo abc", "abc", "/ # echo aXbc"]
    assert shown["cursor"] == [2, 11]
    assert shown["replies"] == ["\x1b[1;5R", "\x1b[3;5R"]
    shown = await screen_after(
        page,
        PROMPT + "echo abcd",
        "\b\b",
        "\b" + "cd" + " " + "\b\b\b",  # Backspace after b: cd moved left over it, the last cell blanked
        "cd",  # End: the cursor moved on by writing what it passes
        "^C\r\n" + PROMPT + ASKED,  # Ctrl-C at the prompt
        "sh -c 'sleep 30'\r\n",
        "^C\r\n" + PROMPT + ASKED,  # Ctrl-C during the sleep: the terminal driver's echo of it, the prompt
    )
    assert shown["lines"] == ["/ # echo acd^C", "/ # sh -c 'sleep 30'", "^C", "/ #"]
    assert shown["cursor"] == [3, 4]


async def test_scrollback_is_bounded_and_the_cursor_position_is_answered(page: Page) -> None:
    output = "".join(f"line {number}\r\n" for number in range(20))
    shown = await screen_after(page, output, "last", rows=3, kept=5)
    assert shown["lines"] == [f"line {number}" for number in range(13, 20)] + ["last"]
    assert shown["cursor"] == [7, 4]
    shown = await screen_after(page, "ab\r\ncd\x1b[6n\x1b[5n", rows=3)
    assert shown["replies"] == ["\x1b[2;3R", "\x1b[0n"]
    # reverse index (ESC M) moves up, and at the top scrolls the screen down
    shown = await screen_after(page, "a\r\nb\r\nc\x1bM\x1bMd\x1bMe", rows=3)
    assert (shown["lines"], shown["cursor"]) == (["  e", "ad", "b"], [0, 3])


async def test_keys_are_sent_as_a_terminals_bytes(page: Page) -> None:
    normal: list[tuple[dict[str, Any], str | None]] = [
        ({"key": "a", "code": "KeyA"}, "a"),
        ({"key": "A", "code": "KeyA", "shiftKey": True}, "A"),
        ({"key": "é", "code": "Quote"}, "é"),
        ({"key": "Enter", "code": "Enter"}, "\r"),
        ({"key": "Backspace", "code": "Backspace"}, "\x7f"),
        ({"key": "Tab", "code": "Tab"}, "\t"),
        ({"key": "Tab", "code": "Tab", "shiftKey": True}, "\x1b[Z"),
        ({"key": "Escape", "code": "Escape"}, "\x1b"),
        ({"key": "ArrowUp", "code": "ArrowUp"}, "\x1b[A"),
        ({"key": "ArrowDown", "code": "ArrowDown"}, "\x1b[B"),
        ({"key": "ArrowRight", "code": "ArrowRight"}, "\x1b[C"),
        ({"key": "ArrowLeft", "code": "ArrowLeft"}, "\x1b[D"),
        ({"key": "ArrowLeft", "code": "ArrowLeft", "ctrlKey": True}, "\x1b[1;5D"),
        ({"key": "Home", "code": "Home"}, "\x1b[H"),
        ({"key": "End", "code": "End"}, "\x1b[F"),
        ({"key": "Delete", "code": "Delete"}, "\x1b[3~"),
        ({"key": "PageUp", "code": "PageUp"}, "\x1b[5~"),
        ({"key": "PageDown", "code": "PageDown"}, "\x1b[6~"),
        ({"key": "c", "code": "KeyC", "ctrlKey": True}, "\x03"),
        ({"key": "d", "code": "KeyD", "ctrlKey": True}, "\x04"),
        ({"key": "\u0441", "code": "KeyC", "ctrlKey": True}, "\x03"),  # a Cyrillic layout's key where C is
        ({"key": "[", "code": "BracketLeft", "ctrlKey": True}, "\x1b"),
        ({"key": " ", "code": "Space", "ctrlKey": True}, "\x00"),
        ({"key": "@", "code": "KeyQ", "ctrlKey": True, "altKey": True}, "@"),  # AltGr
        # the browser's: function keys, Alt and Cmd shortcuts, Ctrl+Shift ones (copy, paste)
        ({"key": "F5", "code": "F5"}, None),
        ({"key": "f", "code": "KeyF", "altKey": True}, None),
        ({"key": "c", "code": "KeyC", "metaKey": True}, None),
        ({"key": "V", "code": "KeyV", "ctrlKey": True, "shiftKey": True}, None),
        ({"key": "Shift", "code": "ShiftLeft", "shiftKey": True}, None),
    ]
    application = [
        ({"key": "ArrowUp", "code": "ArrowUp"}, "\x1bOA"),
        ({"key": "Home", "code": "Home"}, "\x1bOH"),
    ]
    cases = [[init, False] for init, _ in normal] + [[init, True] for init, _ in application]
    sent = await page.evaluate(KEY_BYTES, cases)
    assert sent == [expected for _, expected in normal + application]
    pasted = await page.evaluate(
        "async (text) => (await import('/dashboard/terminal.js')).pastedBytes(text)", "ls\nid\r\npwd"
    )
    assert pasted == "ls\rid\rpwd"


async def test_the_terminal_element_is_focusable_and_says_how_to_leave_it(page: Page, api: Api) -> None:
    await page.goto(api.base_url)  # the dashboard's page
    terminal = page.locator("#serial-output")
    await expect(terminal).to_have_attribute("tabindex", "0")
    await expect(terminal).to_have_attribute("role", "application")
    await expect(terminal).to_have_attribute(
        "aria-labelledby", "serial-title"
    )  # hidden here: no name computed
    await expect(page.locator("#serial-title")).to_have_text("Serial console")
    await expect(terminal).to_have_attribute("aria-describedby", "serial-help")
    await expect(page.locator("#serial-help")).to_contain_text(re.compile(r"Ctrl\s*\+\s*\]\s+leaves it"))
