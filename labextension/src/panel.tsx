/**
 * The JupyterLab side of the panel: the sidebar's ReactWidget, the request dialog,
 * notifications, and inserting + running the load cell in a notebook.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { api } from './api';
import { ITrans, plainTrans } from './i18n';
import { dataAccessIcon } from './icon';
import { IAccessRequest, IDataset, IDatasetDetails, IRequestPolicy, loadCode } from './model';
import { IPanelContext, PanelContext } from './polled';
import { IRequestFormValue, problemWith, RequestFormBody } from './requestform';
import { DataAccessApp, IPanelActions } from './views';

export const PANEL_ID = 'jupyterhub-dataaccess-panel';

/** The "Request access" dialog's body: RequestFormBody in a Lumino widget. */
class RequestForm extends Widget {
  constructor(readonly form: RequestFormBody) {
    super({ node: form.node });
    form.onChange = () => this._syncAccept();
  }

  getValue(): IRequestFormValue {
    return this.form.getValue();
  }

  protected onAfterAttach(): void {
    this._syncAccept();
    this.form.justification.focus();
  }

  private _syncAccept(): void {
    const dialog = this.node.closest('.jp-Dialog-content');
    const accept = dialog?.querySelector<HTMLButtonElement>('.jp-Dialog-footer .jp-mod-accept');
    if (accept) {
      accept.disabled = !this.form.canSubmit;
      accept.title = this.form.denied ? 'The policy denies this request' : '';
    }
  }
}

/** What asking now would give: from the dataset's details, fetched when the row did not carry it. */
async function requestPolicyOf(dataset: IDataset): Promise<IRequestPolicy | null> {
  const known = (dataset as IDatasetDetails).request_policy;
  if (known) {
    return known;
  }
  try {
    return (await api.dataset(dataset.id)).request_policy ?? null;
  } catch {
    return null; // the dialog says the policy decides on sending; the service still does
  }
}

/** Show the request dialog until it is cancelled or valid, then send the request. */
export async function askForAccess(
  dataset: IDataset,
  trans: ITrans = plainTrans
): Promise<IAccessRequest | null> {
  const policy = await requestPolicyOf(dataset);
  let problem = '';
  let previous: IRequestFormValue | undefined;
  for (;;) {
    const result = await showDialog<IRequestFormValue>({
      title: trans.__('Request access'),
      body: new RequestForm(new RequestFormBody(dataset, policy, problem, previous, trans)),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Request') })
      ],
      focusNodeSelector: 'textarea'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    previous = result.value;
    problem = problemWith(result.value, policy, trans);
    if (!problem) {
      break;
    }
  }
  return api.createRequest(dataset.id, previous.justification, previous.days);
}

/** Insert `df = da.load("<id>")` into the current notebook (or a new one) and run it. */
export async function loadIntoNotebook(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  datasetId: string
): Promise<void> {
  let panel: NotebookPanel | null = tracker.currentWidget;
  if (!panel) {
    // Name the default kernel, or JupyterLab stops to ask which one the new notebook should use.
    const specs = app.serviceManager.kernelspecs;
    await specs.ready;
    const kernelName = specs.specs?.default;
    panel = (await app.commands.execute(
      'notebook:create-new',
      kernelName ? { kernelName } : {}
    )) as NotebookPanel | null;
  }
  if (!panel) {
    throw new Error('no notebook could be opened');
  }
  app.shell.activateById(panel.id);
  await panel.context.ready;
  await panel.sessionContext.ready;

  const notebook = panel.content;
  const active = notebook.activeCell;
  const reusable =
    active !== null &&
    active.model.type === 'code' &&
    active.model.sharedModel.getSource().trim() === '';
  if (!reusable) {
    NotebookActions.insertBelow(notebook);
  }
  const cell = notebook.activeCell;
  if (!cell) {
    throw new Error('the notebook has no cell to write to');
  }
  if (cell.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  notebook.activeCell?.model.sharedModel.setSource(loadCode(datasetId));
  await NotebookActions.run(notebook, panel.sessionContext);
}

export function notify(kind: 'success' | 'warning' | 'error' | 'info', message: string): void {
  Notification[kind](message, { autoClose: 10_000 });
}

/** A ReactWidget whose tree reads the panel's context (strings, settings): `update()` re-renders. */
export abstract class ContextWidget extends ReactWidget {
  constructor(protected readonly context: () => IPanelContext) {
    super();
  }

  protected render(): JSX.Element {
    return (
      <PanelContext.Provider value={this.context()}>{this.renderContent()}</PanelContext.Provider>
    );
  }

  protected abstract renderContent(): JSX.Element;
}

/** The left-sidebar widget. */
export class DataAccessPanel extends ContextWidget {
  constructor(
    private readonly actions: IPanelActions,
    context: () => IPanelContext
  ) {
    super(context);
    const { trans } = context();
    this.id = PANEL_ID;
    this.addClass('jp-DataAccess-panel');
    this.title.icon = dataAccessIcon;
    this.title.label = trans.__('Data');
    this.title.caption = trans.__('Data');
  }

  /** Show Browse with `text` in the search box, focused. */
  async search(text = ''): Promise<void> {
    this._search = { text, nonce: (this._search?.nonce ?? 0) + 1 };
    this.update();
    // A command palette that closes gives the focus back to the main area once its activation
    // message is processed (on the next animation frame): take the focus after that.
    for (let frame = 0; frame < 2; frame++) {
      await new Promise(resolve => requestAnimationFrame(resolve));
    }
    this.node.querySelector<HTMLInputElement>('input[type=search]')?.focus();
  }

  protected renderContent(): JSX.Element {
    return <DataAccessApp api={api} actions={this.actions} search={this._search} />;
  }

  private _search: { text: string; nonce: number } | undefined;
}
