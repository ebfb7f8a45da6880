"""The JavaScript the browser step runs in Open WebUI's page, and the selectors it builds.

Owns ``INIT_SCRIPT`` (installed before the page's own scripts: records toasts
with a ``MutationObserver`` and replaces ``navigator.clipboard`` with a
recorder) and the expressions ``bench.owui_browser`` evaluates to sample the
page, read an answer's visible text and status history, find where to click,
and read what Open WebUI stored. Text only; nothing here runs in Python.
"""

from __future__ import annotations

import json
from typing import Final

__all__ = [
    "CENTRE_JS",
    "INIT_SCRIPT",
    "SAMPLE_JS",
    "STATUS_JS",
    "STORED_JS",
    "VISIBLE_JS",
    "button_with_text",
    "in_message",
]

#: Runs before the page's scripts in every document: records toasts and clipboard writes.
INIT_SCRIPT: Final = r"""
(() => {
  if (window !== window.top || window.__orpipe) return;
  const state = (window.__orpipe = { toasts: [], copied: [], errors: [] });
  const seen = new WeakMap();
  const scan = () => {
    for (const el of document.querySelectorAll('[data-sonner-toast]')) {
      let i = seen.get(el);
      if (i === undefined) {
        i = state.toasts.length;
        seen.set(el, i);
        state.toasts.push({ type: el.getAttribute('data-type') || '', text: '', at: Date.now() });
      }
      const text = (el.innerText || el.textContent || '').trim();
      if (text) state.toasts[i].text = text;
    }
  };
  new MutationObserver(scan).observe(document, {
    childList: true, subtree: true, characterData: true, attributes: true,
    attributeFilter: ['data-type'],
  });
  const record = async (text) => { state.copied.push(String(text)); };
  try {
    Object.defineProperty(Clipboard.prototype, 'writeText', {
      configurable: true, value: function (text) { return record(text); },
    });
    Object.defineProperty(Clipboard.prototype, 'write', {
      configurable: true,
      value: async function (items) {
        for (const item of items) {
          if (item.types.includes('text/plain')) {
            await record(await (await item.getType('text/plain')).text());
          }
        }
      },
    });
  } catch (e) { state.errors.push('clipboard: ' + e); }
})();
"""

#: The newest assistant message: id, whether it is done (its Copy button exists), its
#: reasoning blocks' labels, its status line, how much text it shows.
SAMPLE_JS: Final = r"""
(() => {
  const all = [...document.querySelectorAll('div[id^="message-"]')].filter(
    (el) => /^message-[0-9a-f-]+$/i.test(el.id) && el.querySelector('.chat-assistant'));
  const el = all.at(-1);
  if (!el) return { count: 0 };
  const box = el.querySelector('#response-content-container');
  const reasoning = box ? [...box.querySelectorAll('button[aria-expanded]')]
    .map((b) => b.innerText.trim()).filter((t) => /^(Thinking|Thought)/.test(t)) : [];
  const toggle = el.querySelector('button[aria-label="Toggle status history"]');
  return {
    count: all.length,
    id: el.id.slice('message-'.length),
    done: !!el.querySelector('button.copy-response-button'),
    reasoning,
    status: toggle ? toggle.innerText.trim() : null,
    chars: box ? box.innerText.length : 0,
  };
})()
"""

#: The answer's visible text: the content container's rendered text without the reasoning
#: block (and any other collapsible header), which the Copy button leaves out by design.
VISIBLE_JS: Final = r"""
((id) => {
  const el = document.getElementById('message-' + id);
  const box = el && el.querySelector('#response-content-container');
  if (!box) return null;
  const hidden = [];
  for (const b of box.querySelectorAll('button[aria-expanded]')) {
    const root = b.parentElement;
    if (root && root !== box && root.style.display !== 'none') {
      hidden.push([root, root.style.display]);
      root.style.display = 'none';
    }
  }
  const text = box.innerText;
  for (const [node, display] of hidden) node.style.display = display;
  return text;
})(%s)
"""

#: Centre of an element (scrolled into view) for a real mouse click; null while it is
#: absent, has no size or is covered there by another element (an overlay, a toast).
CENTRE_JS: Final = r"""
((find) => {
  const el = find();
  if (!el) return null;
  el.scrollIntoView({ block: 'center', inline: 'center' });
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return null;
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  if (!hit || !(el === hit || el.contains(hit))) return null;
  return { x: Math.round(x), y: Math.round(y) };
})(() => %s)
"""

#: The status history of a message: whether it is expanded, the line shown, every entry.
STATUS_JS: Final = r"""
((id) => {
  const el = document.getElementById('message-' + id);
  const toggle = el && el.querySelector('button[aria-label="Toggle status history"]');
  if (!toggle) return null;
  const root = toggle.parentElement;
  const entries = [...root.querySelectorAll('.status-description')]
    .filter((d) => !toggle.contains(d)).map((d) => d.innerText.trim());
  return {
    expanded: toggle.getAttribute('aria-expanded') === 'true',
    line: toggle.innerText.trim(),
    entries,
  };
})(%s)
"""


#: The message as Open WebUI stored it (content, error, status history), fetched by the page
#: with its own token; ``{"problem": ...}`` when it cannot be had.
STORED_JS: Final = r"""
(async (id) => {
  const chat = location.pathname.match(/^\/c\/([^/]+)/);
  if (!chat) return { problem: 'no chat id in the address ' + location.pathname };
  const r = await fetch('/api/v1/chats/' + chat[1], {
    headers: { Authorization: 'Bearer ' + localStorage.token },
  });
  if (!r.ok) return { problem: 'GET /api/v1/chats/' + chat[1] + ': HTTP ' + r.status };
  const body = await r.json();
  const m = body?.chat?.history?.messages?.[id];
  if (!m) return { problem: 'message ' + id + ' is not in the stored chat' };
  return {
    content: m.content ?? '',
    error: m.error ?? null,
    statusHistory: m.statusHistory ?? null,
    done: m.done ?? null,
  };
})(%s)
"""


def button_with_text(text: str) -> str:
    return (
        "[...document.querySelectorAll('button')].find("
        f"(b) => b.innerText.trim() === {json.dumps(text)})"
    )


def in_message(message_id: str, selector: str) -> str:
    return (
        f"document.getElementById({json.dumps('message-' + message_id)})"
        f"?.querySelector({json.dumps(selector)})"
    )
