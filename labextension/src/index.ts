/**
 * jupyterhub-dataaccess:plugin — the "Data" panel in JupyterLab's left sidebar.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';

import { DataAccessPanel, PANEL_ID } from './panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyterhub-dataaccess:plugin',
  description: 'Browse datasets, request access, review requests and load data into notebooks.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null
  ): void => {
    const panel = new DataAccessPanel(app, tracker);
    app.shell.add(panel, 'left', { rank: 200 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
  }
};

export default plugin;
