import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import { Linkified, splitLinks } from '../widgets/linkified';

describe('Linkified', () => {
  it('turns the URLs of a message into links, without the full stop after them', () => {
    const text =
      'install the NVIDIA Container Toolkit: https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/. Then restart Docker.';
    expect(splitLinks(text)).toEqual([
      'install the NVIDIA Container Toolkit: ',
      'https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/',
      '. Then restart Docker.'
    ]);
    const html = renderToStaticMarkup(<Linkified text={text} />);
    expect(html).toContain(
      '<a href="https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/" target="_blank" rel="noopener noreferrer"'
    );
    expect(html).toContain('. Then restart Docker.');
  });

  it('leaves text without URLs (and markup in it) as text', () => {
    const html = renderToStaticMarkup(<Linkified text="no <b>GPU</b> free" />);
    expect(html).toBe('no &lt;b&gt;GPU&lt;/b&gt; free');
  });
});
