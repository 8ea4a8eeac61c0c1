// Glue for the self-served ipywidgets renderer: loaded after widgets/require.js, before widgets/embed-amd.js.
(function () {
  // 1. The renderer loads its icon fonts from the folder its AMD modules seem to come from, which
  //    RequireJS derives from their names: map those names to the folder that holds the fonts.
  const folder = new URL("widgets", document.currentScript.src).href;
  requirejs.config({paths: {"@jupyter-widgets/html-manager/dist": folder, "@jupyter-widgets": folder}});

  // 2. It typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue) whenever window.MathJax
  //    exists, but the book loads MathJax 3, which has no Hub and replaces window.MathJax as it starts.
  //    Give every object assigned to window.MathJax a Hub that forwards to MathJax 3.
  const hub = {
    Queue: (command) => window.MathJax.startup?.promise.then(() => window.MathJax.typesetPromise([command[2]])),
  };
  let mathjax = window.MathJax;
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: () => mathjax,
    set: (value) => {
      mathjax = value;
      if (value && !value.Hub) value.Hub = hub;
    },
  });
  window.MathJax = mathjax;
})();
