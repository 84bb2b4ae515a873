import * as React from 'react';

/** http(s) URLs in a message (a trailing full stop, comma or bracket is not part of one). */
const URL_RE = /(https?:\/\/[^\s<>"']*[^\s<>"'.,;:!?)\]])/g;

/** The parts of `text`: plain text at even indexes, URLs at odd ones. */
export function splitLinks(text: string): string[] {
  return text.split(URL_RE);
}

/** A server message with its URLs as links (they open in a new tab): the fix is often a docs page. */
export function Linkified(props: { text: string }): JSX.Element {
  return (
    <>
      {splitLinks(props.text).map((part, i) =>
        i % 2 ? (
          <a
            key={i}
            href={part}
            target="_blank"
            rel="noopener noreferrer"
            className="jp-ptcuda-link"
          >
            {part}
          </a>
        ) : (
          part
        )
      )}
    </>
  );
}
