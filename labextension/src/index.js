/*
 * sibyl-nb-yaml: in JupyterLab, a code cell whose first line is %%sibyl_pipeline is highlighted as
 * YAML (its body is a YAML document), every other cell as the kernel's language.
 *
 * How: a cell's editor follows its model's mimeType. The notebook sets every code cell's mimeType
 * from the kernel's language (and again when the kernel changes), so the plugin re-applies
 * text/x-yaml whenever a cell's source or mimeType changes and the cell is a sibyl_pipeline cell.
 */
import { INotebookTracker } from '@jupyterlab/notebook';

const YAML = 'text/x-yaml';
const MAGIC = /^\s*%%sibyl_pipeline\b/;

function isSibyl(model) {
  return model.type === 'code' && MAGIC.test(model.sharedModel.getSource());
}

function follow(model) {
  if (model.type !== 'code' || model.__sibylFollowed) {
    return;
  }
  model.__sibylFollowed = true;
  let applying = false;
  const apply = () => {
    if (applying) {
      return;
    }
    applying = true;
    try {
      if (isSibyl(model)) {
        if (model.mimeType !== YAML) {
          model.__sibylOriginal = model.mimeType;
          model.mimeType = YAML;
        }
      } else if (model.mimeType === YAML && model.__sibylOriginal) {
        model.mimeType = model.__sibylOriginal;
      }
    } finally {
      applying = false;
    }
  };
  model.contentChanged.connect(apply);
  model.mimeTypeChanged.connect((_, change) => {
    if (!applying && change.newValue !== YAML) {
      model.__sibylOriginal = change.newValue;
    }
    apply();
  });
  apply();
}

function watch(panel) {
  const notebook = panel.content;
  const attach = () => {
    const cells = notebook.model ? notebook.model.cells : null;
    if (!cells || cells.__sibylWatched) {
      return;
    }
    cells.__sibylWatched = true;
    for (let i = 0; i < cells.length; i++) {
      follow(cells.get(i));
    }
    cells.changed.connect((_, change) => {
      for (const model of change.newValues || []) {
        follow(model);
      }
    });
  };
  attach();
  notebook.modelChanged.connect(attach);
  panel.context.ready.then(attach);
}

const plugin = {
  id: 'sibyl-nb-yaml:plugin',
  description: 'Highlight %%sibyl_pipeline cells as YAML.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app, tracker) => {
    tracker.forEach(watch);
    tracker.widgetAdded.connect((_, panel) => watch(panel));
  }
};

export default plugin;
