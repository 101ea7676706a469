/*
 * sibyl-nb-yaml: in JupyterLab, a code cell whose first line is %%sibyl_pipeline is highlighted as
 * YAML (its body is a YAML document), every other cell as the kernel's language.
 *
 * Two parts, because the cell's mimeType alone does not decide the colours:
 *  - the editor: every cell editor gets a highest-precedence slot holding the YAML language while its
 *    first line is %%sibyl_pipeline (re-decided in the same transaction as each edit). JupyterLab's
 *    editor loads the language of a mimeType change asynchronously and the last load to finish wins,
 *    so when the notebook resets a cell to the kernel's mimeType and this plugin sets YAML back, the
 *    slower first load of Python could (and in a fresh Lab did) leave a "YAML" cell coloured as Python.
 *  - the model: the cell's mimeType says text/x-yaml while it is a sibyl_pipeline cell, for the tools
 *    that read it (the notebook resets it from the kernel's language; it is re-applied each time).
 */
import { Compartment, Prec, EditorState } from '@codemirror/state';
import {
  EditorExtensionRegistry,
  IEditorExtensionRegistry,
  IEditorLanguageRegistry
} from '@jupyterlab/codemirror';
import { INotebookTracker } from '@jupyterlab/notebook';

const YAML = 'text/x-yaml';
const MAGIC = /^\s*%%sibyl_pipeline\b/;

function firstLine(text) {
  const end = text.indexOf('\n');
  return end < 0 ? text : text.slice(0, end);
}

/** The editor extension: YAML in a top-precedence slot while the first line is the magic. */
function yamlWhileSibyl(yaml, source) {
  const slot = new Compartment();
  const wants = doc => MAGIC.test(doc.line(1).text);
  return [
    Prec.highest(slot.of(MAGIC.test(firstLine(source)) ? yaml : [])),
    EditorState.transactionExtender.of(tr => {
      if (!tr.docChanged) {
        return null;
      }
      const on = wants(tr.newDoc);
      if (on === (slot.get(tr.startState) === yaml)) {
        return null;
      }
      return { effects: slot.reconfigure(on ? yaml : []) };
    })
  ];
}

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
  requires: [INotebookTracker, IEditorExtensionRegistry, IEditorLanguageRegistry],
  activate: async (app, tracker, extensions, languages) => {
    const yaml = (await languages.getLanguage(YAML)).support;
    extensions.addExtension({
      name: 'sibyl-nb-yaml:highlight',
      factory: ({ model }) =>
        model && model.type === 'code'
          ? EditorExtensionRegistry.createImmutableExtension(
              yamlWhileSibyl(yaml, model.sharedModel.getSource())
            )
          : null
    });
    tracker.forEach(watch);
    tracker.widgetAdded.connect((_, panel) => watch(panel));
  }
};

export default plugin;
