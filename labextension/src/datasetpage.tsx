/**
 * The dataset page as a main-area widget: one tab per dataset, id `jupyterhub-dataaccess-dataset-<id>`,
 * tracked so the layout restorer reopens it on reload.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import * as React from 'react';

import { api } from './api';
import { IDatasetPageActions, DatasetPageView } from './datasetview';
import { dataAccessIcon } from './icon';
import { IDatasetDetails } from './model';
import { ContextWidget } from './panel';
import { IPanelContext } from './polled';

export const DATASET_PAGE_PREFIX = 'jupyterhub-dataaccess-dataset-';

class DatasetPageContent extends ContextWidget {
  constructor(
    readonly datasetId: string,
    private readonly actions: IDatasetPageActions,
    context: () => IPanelContext
  ) {
    super(context);
    this.addClass('jp-DataAccess-pageContent');
  }

  protected renderContent(): JSX.Element {
    return (
      <DatasetPageView
        api={api}
        actions={this.actions}
        datasetId={this.datasetId}
        onLoaded={this._onLoaded}
      />
    );
  }

  /** The tab is titled by the dataset once its details arrive. */
  onTitle: ((details: IDatasetDetails) => void) | null = null;

  private _onLoaded = (details: IDatasetDetails): void => this.onTitle?.(details);
}

export type DatasetPage = MainAreaWidget<DatasetPageContent>;

/** A new dataset page for `datasetId`; `actions.isVisible` is answered by the page itself. */
export function createDatasetPage(
  datasetId: string,
  actions: Omit<IDatasetPageActions, 'isVisible'>,
  context: () => IPanelContext
): DatasetPage {
  let page: DatasetPage | null = null;
  const content = new DatasetPageContent(
    datasetId,
    { ...actions, isVisible: () => page?.isVisible ?? false },
    context
  );
  page = new MainAreaWidget({ content });
  page.id = DATASET_PAGE_PREFIX + datasetId;
  page.addClass('jp-DataAccess-datasetPage');
  page.title.icon = dataAccessIcon;
  page.title.label = datasetId;
  page.title.closable = true;
  content.onTitle = details => {
    page!.title.label = details.title || details.id;
    page!.title.caption = `${details.title || details.id} (${details.id})`;
  };
  return page;
}
