// Formulas in pages and docstrings ($...$, \(...\), \[...\]), rendered with the KaTeX
// vendored beside this file (0.16, MIT), so the site needs no network.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
  });
});
